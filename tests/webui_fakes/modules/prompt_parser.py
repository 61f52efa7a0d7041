"""Fake modules.prompt_parser: the conditioning containers and the functions CCDM calls, with 1.6.0's signatures.

Prompt syntax is not parsed, except a whole prompt `[A:B:N]` (prompt editing: A up to step N, then B), so that
tests can see which sampling step a schedule is read at.
"""
import collections
import re

import torch

ScheduledPromptConditioning = collections.namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
_EDIT = re.compile(r"^\[([^:\[\]]*):([^:\[\]]*):(\d+)\]$")


class SdConditioning(list):
    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        self.is_negative_prompt, self.width, self.height = is_negative_prompt, width, height


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules, self.weight = schedules, weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape, self.batch = shape, batch


def _schedule(prompt, steps):
    edit = _EDIT.match(prompt)
    return [(int(edit.group(3)), edit.group(1)), (steps, edit.group(2))] if edit else [(steps, prompt)]


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    out = []
    for prompt in prompts:
        schedule = _schedule(prompt, steps)
        conds = model.get_learned_conditioning([text for _, text in schedule])
        out.append([ScheduledPromptConditioning(end, cond) for (end, _), cond in zip(schedule, conds)])
    return out


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    schedules = get_learned_conditioning(model, prompts, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(schedule)] for schedule in schedules]
    return MulticondLearnedConditioning((len(prompts),), batch)


def _at(schedule, step):
    return next((entry.cond for entry in schedule if step <= entry.end_at_step), schedule[-1].cond)


def reconstruct_cond_batch(c, current_step):
    return torch.stack([_at(schedule, current_step) for schedule in c])


def reconstruct_multicond_batch(c, current_step):
    conds_list = [[(i, item[0].weight)] for i, item in enumerate(c.batch)]
    return conds_list, torch.stack([_at(item[0].schedules, current_step) for item in c.batch])
