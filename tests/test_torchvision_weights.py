"""torchvision's own ResNet-50 and ResNeXt-50 (32×4d) weights load into explorer's models,
which then compute the same function.

`torchvision.models.resnet50()` and `resnext50_32x4d()` are built with weights=None
(nothing is downloaded), their batch norms given random statistics so that the
eval-mode comparison tests those too, and their state_dicts loaded into
`build_model(resnet50())` / `build_model(resnext50_32x4d())`: strictly into the
grouped form, and through models/convert.py into the concat and split forms.

Where `import torchvision` fails (here PyPI's torchvision wheels are built for the
CUDA torch and fail beside the CPU torch wheel: "operator torchvision::nms does not
exist"), the tests skip, naming the error. The check functions need no pytest and take
a device, so the device check (benchmarks/device_check.py) can call them on the GPU
machine, where torchvision imports: ``compare_with_torchvision("resnext50_32x4d",
"cuda")`` returns the largest difference per block form and raises where one is not
allclose; ``init_from_torchvision_file("resnet50", PATH)`` checks --init's reader.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from explorer.arch import BlockForm, resnet50, resnext50_32x4d
from explorer.models import build_model, load_any_form
from explorer.train import read_initial_weights

ARCHS = {"resnet50": resnet50, "resnext50_32x4d": resnext50_32x4d}


def torchvision_or_reason() -> tuple[ModuleType | None, str]:
    """(torchvision, "") where it imports, else (None, why not)."""
    try:
        import torchvision
    except Exception as problem:  # ImportError, or the RuntimeError of its operators
        first = (str(problem).strip().splitlines() or [""])[0]
        return None, f"torchvision does not import here ({type(problem).__name__}: {first})"
    return torchvision, ""


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """`model` with random batch-norm statistics and affine terms (fresh ones are 0 and 1,
    which an eval-mode comparison could not tell apart from missing ones)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def torchvision_model(name: str, torchvision: Any, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomised(getattr(torchvision.models, name)(weights=None), seed)


def compare_with_torchvision(name: str, device: str = "cpu", forms: tuple[BlockForm, ...] = (
        "grouped", "concat", "split"), batch: int = 2) -> dict[str, float]:
    """Load torchvision's `name` weights into explorer's model in each block form and
    compare outputs on a random 224×224 batch in eval mode; returns the largest absolute
    difference per form and raises AssertionError where one is not allclose."""
    torchvision, reason = torchvision_or_reason()
    if torchvision is None:
        raise RuntimeError(reason)
    reference = torchvision_model(name, torchvision).to(device).eval()
    state = reference.state_dict()
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    images = images.to(device)
    with torch.no_grad():
        expected = reference(images)
    differences: dict[str, float] = {}
    for form in forms:
        ours = build_model(ARCHS[name](form), 1000).to(device)
        if form == "grouped":  # torchvision's layout exactly: names, order and shapes
            ours.load_state_dict(state, strict=True)
        else:
            load_any_form(ours, state)
        with torch.no_grad():
            got = ours.eval()(images)
        differences[form] = float((got - expected).abs().max())
        try:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        except AssertionError as problem:
            raise AssertionError(f"{name} ({form} form): {problem}") from None
    return differences


def init_from_torchvision_file(name: str, path: str | Path) -> None:
    """`explorer train --init`'s reader on a torch.save'd torchvision state_dict: the
    weights it returns are torchvision's, tensor for tensor."""
    torchvision, reason = torchvision_or_reason()
    if torchvision is None:
        raise RuntimeError(reason)
    state = torchvision_model(name, torchvision).state_dict()
    torch.save(state, path)
    weights = read_initial_weights(Path(path), ARCHS[name](), 1000)
    assert list(weights) == list(state)
    for key, tensor in state.items():
        assert torch.equal(weights[key], tensor), key


# --- under pytest ----------------------------------------------------------------------


def _needs_torchvision() -> None:
    if torchvision_or_reason()[0] is None:
        import pytest  # only here: benchmarks/device_check.py calls these tests without pytest

        pytest.skip(torchvision_or_reason()[1])


def test_resnet50_weights_from_torchvision() -> None:
    _needs_torchvision()
    compare_with_torchvision("resnet50", forms=("grouped",))


def test_resnext50_weights_from_torchvision_in_every_form() -> None:
    _needs_torchvision()
    compare_with_torchvision("resnext50_32x4d", batch=1)


def test_init_reads_a_torchvision_file(tmp_path: Path) -> None:
    _needs_torchvision()
    init_from_torchvision_file("resnext50_32x4d", tmp_path / "tv.pt")


def test_the_skip_reason_names_the_error() -> None:
    torchvision, reason = torchvision_or_reason()
    assert (torchvision is None) == bool(reason)
    if torchvision is None:
        assert reason.startswith("torchvision does not import here (")
