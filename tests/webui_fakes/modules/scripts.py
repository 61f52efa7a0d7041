"""Fake modules.scripts: the Script base class and the AlwaysVisible marker."""
import re

AlwaysVisible = object()


class Script:
    filename = None
    is_txt2img = False
    is_img2img = False
    infotext_fields = None
    paste_field_names = None

    def title(self):
        raise NotImplementedError()

    def elem_id(self, item_id):
        tab = "img2img_" if self.is_img2img else "txt2img_"
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"
