"""Fake modules.shared: opts, cmd_opts, state, OptionInfo, sd_model."""
import types


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.section = section


class Options:
    def __init__(self):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "data_labels", {})

    def add_option(self, key, info):
        self.data_labels[key] = info

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        self.data[key] = value


class State:
    interrupted = False
    skipped = False
    job = ""
    job_count = 0
    job_no = 0
    textinfo = None

    def nextjob(self):
        self.job_no += 1

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def begin(self, job="(unknown)"):
        self.interrupted = self.skipped = False
        self.job = job

    def end(self):
        self.job = ""


opts = Options()
opts.data.update(save_incomplete_images=False)
cmd_opts = types.SimpleNamespace(ccdm_motion_dir=None, no_hashing=False)
state = State()
sd_model = None
