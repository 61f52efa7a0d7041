"""Fake modules.hashes: sha256(filename, title) with the titles it was asked for recorded."""
import hashlib

titles = []


def sha256(filename, title, use_addnet_hash=False):
    titles.append(title)
    digest = hashlib.sha256()
    with open(filename, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
