"""The names the learning-rate and EMA schedules choose from: one declaration each, without TensorFlow.

`schedules.warmup_learning_rate` / `ema.ema_tau` check their arguments
against these, and `PretrainConfig` offers them as the choices of
`--warmup_mode`, `--lr_schedule` and `--ema_schedule` (reading settings
imports no TensorFlow, so they cannot live in those two modules).
What each name computes: `schedules.py` (learning rate) and `ema.py` (tau).

Example:
```python
from myol_keras.schedule_choices import EMA_SCHEDULES

assert "cosine" in EMA_SCHEDULES
```
"""

#: warm-up of the learning rate: `linear` to --lr, or the MYOL reference's `myol_faithful` (1.1x plateau).
WARMUP_MODES = ("linear", "myol_faithful")
#: the learning rate after the warm-up: `constant` or `cosine` to 0.
LR_SCHEDULES = ("constant", "cosine")
#: the EMA momentum tau: `constant` (MYOL reference) or `cosine` to 1 (BYOL paper).
EMA_SCHEDULES = ("constant", "cosine")
