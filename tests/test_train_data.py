"""Training data: caption sources, clip decoding, skipping bad videos, sharding, the latent cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ccdm_core.errors import CCDMError
from ccdm_core.video import read_video, write_video
from train.cache import CacheIndex, LatentClipDataset, build_latent_cache, cache_fingerprint
from train.data import ClipError, VideoItem, caption_from_name, load_items, read_clip, resize_center_crop
from train.dataset import BatchStream, ClipDataset, SampleKey, ShardSampler, Skipped
from train.synthetic import write_synthetic_videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    paths = write_synthetic_videos(folder, count=3, frames=12, size=64)
    (folder / "broken.mp4").write_bytes(b"\x00 not a video " * 64)
    write_video(np.zeros((2, 64, 64, 3), np.uint8), folder / "short.mp4", 8)
    return folder, paths


def test_folder_without_caption_file_uses_file_names(videos):
    folder, paths = videos
    items = load_items(str(folder))
    assert len(items) == 5
    captions = {item.caption for item in items}
    assert "camera pans right over a photo 0" in captions and "broken" in captions
    assert caption_from_name(folder / "a_cat-walking.mp4") == "a cat walking"


def test_webvid_csv_and_path_columns(tmp_path):
    (tmp_path / "001").mkdir()
    (tmp_path / "001" / "42.mp4").write_bytes(b"x")
    (tmp_path / "results.csv").write_text("videoid,contentUrl,duration,page_dir,name\n"
                                          "42,http://x,PT10S,001,\"a dog, running\"\n", encoding="utf-8")
    items = load_items(str(tmp_path / "results.csv"))
    assert items[0].caption == "a dog, running"
    assert items[0].resolve() == tmp_path / "001" / "42.mp4"
    (tmp_path / "other.csv").write_text("path,caption\nclips/a.mp4,hello\n", encoding="utf-8")
    item = load_items(str(tmp_path / "other.csv"), video_root="/data")[0]
    assert item.candidates == ("/data/clips/a.mp4",) and item.caption == "hello"
    with pytest.raises(CCDMError, match="2 caption files"):
        load_items(str(tmp_path))


def test_jsonl_and_its_errors(tmp_path, videos):
    folder, paths = videos
    lines = [json.dumps({"video": str(paths[0]), "caption": "first"}), "", json.dumps({"video": "rel.mp4",
                                                                                         "caption": "second"})]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines), encoding="utf-8")
    items = load_items(str(tmp_path))  # a folder with one caption file uses it
    assert [i.caption for i in items] == ["first", "second"]
    assert items[1].candidates == (str(tmp_path / "rel.mp4"),)
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4"}\n', encoding="utf-8")
    with pytest.raises(CCDMError, match="caption"):
        load_items(str(tmp_path / "captions.jsonl"))
    (tmp_path / "captions.jsonl").write_text("not json\n", encoding="utf-8")
    with pytest.raises(CCDMError, match="not JSON"):
        load_items(str(tmp_path / "captions.jsonl"))
    with pytest.raises(CCDMError, match="neither a folder"):
        load_items(str(tmp_path / "nothing.txt"))


@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
def test_read_clip_takes_every_stride_th_frame(videos, decoder):
    _, paths = videos
    reference, _ = read_video(paths[1])  # the moving square: every frame differs
    clip = read_clip(paths[1], 6, 6, 2, np.random.default_rng(0), decoder)
    assert clip.shape == (6, 64, 64, 3)
    # which start was drawn: the one whose strided frames match best
    errors = [np.abs(reference[s: s + 11: 2].astype(float) - clip).mean() for s in range(2)]
    assert min(errors) < 3.0
    with pytest.raises(ClipError, match="too short"):
        read_clip(paths[1], 8, 8, 2, np.random.default_rng(0), decoder)
    with pytest.raises(ClipError, match="corrupt"):
        read_clip(videos[0] / "broken.mp4", 4, 4, 1, np.random.default_rng(0), decoder)


def test_resize_center_crop():
    frames = np.zeros((2, 90, 160, 3), np.uint8)
    frames[:, :, 35:125] = 255  # the centre square
    out = resize_center_crop(frames, 64)
    assert out.shape == (2, 64, 64, 3) and out.min() == 255


def test_bad_videos_are_skipped_with_a_reason(videos):
    folder, _ = videos
    items = load_items(str(folder)) + [VideoItem((str(folder / "gone.mp4"),), "gone")]
    dataset = ClipDataset(items, frames=8, stride=1, size=64, caption_dropout=0.0, seed=0)
    results = {items[i].caption: dataset[SampleKey(0, i, i)] for i in range(len(items))}
    assert results["broken"].reason.startswith("corrupt")
    assert results["short"].reason.startswith("too short")
    assert results["gone"].reason == "missing"
    good = results["a square moving 1"]
    assert good.pixels.shape == (8, 64, 64, 3) and good.pixels.dtype == torch.uint8
    dropped = ClipDataset(items, 8, 1, 64, caption_dropout=1.0, seed=0)[SampleKey(0, 0, 0)]
    assert dropped.caption == ""


def test_shard_sampler_partitions_and_resumes():
    shards = [ShardSampler(7, rank, 3, seed=1) for rank in range(3)]
    epoch0 = [s.shard(0).tolist() for s in shards]
    assert set(sum(epoch0, [])) == set(range(7))  # every video is in some rank's shard
    assert all(len(part) == 3 for part in epoch0)  # 7 padded to 9 by wrapping: equal shards
    assert shards[0].shard(1).tolist() != epoch0[0]  # a new order each epoch
    it = iter(ShardSampler(7, 0, 1, seed=1))
    keys = [next(it) for _ in range(10)]
    resumed = iter(ShardSampler(7, 0, 1, seed=1, start=(keys[5].epoch, keys[5].position)))
    assert [next(resumed) for _ in range(5)] == keys[5:]
    sampler = ShardSampler(3, 0, 1, seed=0)
    sampler.bad.update({0, 1, 2})
    with pytest.raises(CCDMError, match="none of the 3 videos"):
        next(iter(sampler))


def test_batch_stream_fills_batches_and_counts_skipped(videos):
    folder, _ = videos
    items = load_items(str(folder))
    dataset = ClipDataset(items, frames=8, stride=1, size=64, caption_dropout=0.0, seed=0)
    stream = BatchStream(dataset, ShardSampler(len(items), 0, 1, seed=0), batch_size=2, workers=0)
    batches = [stream.next_batch() for _ in range(4)]
    assert all(b.pixels.shape == (2, 3, 8, 64, 64) for b in batches)
    assert -1.0 <= batches[0].pixels.min() and batches[0].pixels.max() <= 1.0
    assert sorted(r.split(":")[0] for r in stream.skipped.values()) == ["corrupt", "too short"]
    assert stream.cursor[0] >= 1  # 8 good clips from 3 readable videos: into the third epoch


def test_latent_cache_build_reuse_and_windows(tmp_path, videos):
    folder, _ = videos
    items = load_items(str(folder))
    calls = []

    def encode(images):
        calls.append(len(images))
        return torch.nn.functional.avg_pool2d(images, 8)[:, :3].repeat(1, 2, 1, 1)[:, :4]

    fingerprint = cache_fingerprint(items, "test", 64, 1, 10, 0)
    index = CacheIndex(tmp_path, fingerprint)
    build_latent_cache(items, index.missing(len(items)), index, encode, frames=8, clip_frames=10, stride=1,
                       size=64, seed=0, rank=0)
    loaded = CacheIndex(tmp_path, fingerprint).load()
    assert loaded.missing(len(items)) == [] and len(loaded.entries) == 3 and len(loaded.skipped) == 2
    assert CacheIndex(tmp_path, "other").load().missing(len(items)) == list(range(len(items)))
    dataset = LatentClipDataset(items, loaded, frames=8, caption_dropout=0.0, seed=0)
    good = next(i for i in range(len(items)) if i in loaded.entries)
    sample = dataset[SampleKey(0, 0, good)]
    assert sample.latents.shape == (8, 4, 8, 8) and sample.latents.dtype == torch.float16
    bad = next(iter(loaded.skipped))
    assert isinstance(dataset[SampleKey(0, 0, bad)], Skipped)
    assert sum(calls) == 30  # 3 readable videos x 10 frames, encoded once
