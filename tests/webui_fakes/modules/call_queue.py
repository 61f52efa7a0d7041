"""Fake modules.call_queue: the queue lock and a pass-through wrap_gradio_gpu_call."""
import threading

queue_lock = threading.Lock()


def wrap_gradio_gpu_call(func, extra_outputs=None):
    def f(*args, **kwargs):
        return func(*args, **kwargs)
    f.wrapped = func
    return f
