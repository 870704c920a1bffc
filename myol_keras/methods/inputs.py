"""What a method trains on besides the views of the pre-training images, resolved against the data.

Most methods need nothing more than their `make_view_fn` at the training size.
A method class that needs more defines a classmethod `resolve_inputs(config,
plan) -> MethodInputs`, which `training.plan_run` calls before anything is
written (so a data set that cannot serve it is one line, exit 2):

* CLSA: the strong view's size, checked against the backbone's stem
  (`view_options`, passed on to `make_view_fn`);
* SuNCEt: the labelled training split and its class-balanced batch of every
  step (`attach` zips it with the pre-training stream).

`training.build_dataset` and the device augmentation go through `view_fn` and
`attach`. Importing this module imports no TensorFlow.
"""

import dataclasses
import typing


@dataclasses.dataclass
class MethodInputs:
    """A method's inputs resolved for a run (`RunPlan.method_inputs`).

    Args:
        view_options: extra keyword arguments of the method's `make_view_fn`.
        attach: `(dataset, start_epoch, replicas) -> dataset`, adding what
            each batch needs besides its views (SuNCEt's labelled batch, one
            block per replica of the strategy); None: nothing.
        facts: JSON-able values resolved here (recorded in `config.json`).

    Example:
    ```python
    MethodInputs(view_options={"strong_size": 14}, facts={"clsa_strong_size": 14})
    ```
    """

    view_options: dict = dataclasses.field(default_factory=dict)
    attach: typing.Optional[typing.Callable] = None
    facts: dict = dataclasses.field(default_factory=dict)


def resolve(config, plan):
    """Set `plan.method_inputs` from the method's `resolve_inputs` (None if it has none); returns `plan`.

    Raises `ValueError` where the data cannot serve the method (SuNCEt without labels).
    """
    from myol_keras.methods import get_method

    hook = getattr(get_method(config.method), "resolve_inputs", None)
    plan.method_inputs = hook(config, plan) if hook else None
    return plan


def _inputs(plan):
    return getattr(plan, "method_inputs", None)


def view_fn(config, plan, method_cls):
    """`method_cls.make_view_fn` at the plan's size and statistics, with the method's resolved view options."""
    inputs = _inputs(plan)
    options = inputs.view_options if inputs else {}
    return method_cls.make_view_fn(plan.image_size, plan.mean, plan.std, seed=config.seed, **options)


def attach(ds, plan, start_epoch, replicas=1):
    """`ds` with what the method's batches need besides their views (unchanged for most methods).

    `replicas`: the strategy's `num_replicas_in_sync` (SuNCEt draws one labelled block per replica).
    """
    inputs = _inputs(plan)
    return inputs.attach(ds, start_epoch, replicas) if inputs and inputs.attach else ds


def facts(plan):
    """The resolved values to record beside the run's settings (`RunPlan.resolved`)."""
    inputs = _inputs(plan)
    return dict(inputs.facts) if inputs else {}
