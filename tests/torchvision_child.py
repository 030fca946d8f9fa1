"""torchvision.ops.deform_conv2d on the cases that `tests/test_primitives_deform.py` saved, run
by the side venv's python (`make torchvision-venv`) where torchvision does not import beside
the project's own torch. Imports neither nas nor the tests: only torch and torchvision.

    .venv-torchvision/bin/python tests/torchvision_child.py CASES.pt OUTPUTS.pt

CASES.pt: a list of dicts (x, offset, weight, bias, mask: tensors or None; stride, padding,
dilation: (int, int)); OUTPUTS.pt: the list of outputs, in the same order.
"""

from __future__ import annotations

import sys

import torch
from torchvision.ops import deform_conv2d


def main(cases_path: str, outputs_path: str) -> None:
    cases = torch.load(cases_path, weights_only=True)
    with torch.no_grad():
        outputs = [deform_conv2d(c["x"], c["offset"], c["weight"], c["bias"], stride=c["stride"],
                                 padding=c["padding"], dilation=c["dilation"], mask=c["mask"]) for c in cases]
    torch.save(outputs, outputs_path)
    print(f"torch {torch.__version__}, torchvision {sys.modules['torchvision'].__version__}: {len(outputs)} cases")


if __name__ == "__main__":
    main(*sys.argv[1:])
