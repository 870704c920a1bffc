"""myol_keras.scoped.ScopedSetting: nested blocks restore in order, exceptions too, and each thread has its own value."""

import threading

import pytest

from myol_keras.scoped import ScopedSetting


def test_nested_blocks_restore_in_order_even_on_error():
    setting = ScopedSetting(default=1)
    with setting.set(2):
        with setting.set(3):
            assert setting.value == 3
        assert setting.value == 2
        with pytest.raises(RuntimeError), setting.set(4):
            raise RuntimeError("inside")
        assert setting.value == 2
    assert setting.value == 1


def test_another_thread_sees_the_default():
    setting = ScopedSetting(default=0)
    seen = []
    with setting.set(8):
        thread = threading.Thread(target=lambda: seen.append(setting.value))
        thread.start()
        thread.join()
        assert setting.value == 8
    assert seen == [0]


def test_a_process_wide_setting_is_seen_by_every_thread():
    setting = ScopedSetting(default="auto", per_thread=False)
    seen = []
    with setting.set(4):
        thread = threading.Thread(target=lambda: seen.append(setting.value))
        thread.start()
        thread.join()
    assert seen == [4] and setting.value == "auto"
