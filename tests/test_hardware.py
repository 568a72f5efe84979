"""hardware.py: device choice, clear errors for missing devices, the Rosetta warning."""

from __future__ import annotations

import subprocess

import pytest
import torch

from tests.conftest import run_cli
from worldmodel import hardware
from worldmodel.errors import HardwareError
from worldmodel.hardware import HardwareConfig


def test_auto_picks_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "mps_available", lambda: False)
    assert hardware.pick_device("auto") == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(hardware, "mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.pick_device("auto").type == "mps"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_missing_device_names_the_fix(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "mps_available", lambda: False)
    with pytest.raises(HardwareError, match="hardware=cpu or hardware=auto"):
        hardware.pick_device(device)


def test_unknown_device_is_rejected():
    with pytest.raises(HardwareError, match="'tpu' is not one of"):
        hardware.pick_device("tpu")


def test_setup_applies_threads_and_determinism():
    before = torch.get_num_threads()
    try:
        hw = hardware.setup(HardwareConfig(device="cpu", threads=1, deterministic=True))
        assert hw.threads == 1 and torch.are_deterministic_algorithms_enabled()
        hardware.setup(HardwareConfig(device="cpu"))
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("bad", [{"threads": 0}, {"workers": 0}])
def test_setup_rejects_bad_counts(bad):
    with pytest.raises(HardwareError, match="must be >= 1"):
        hardware.setup(HardwareConfig(device="cpu", **bad))


def fake_mac(monkeypatch, machine: str, sysctl: dict[str, str]):
    monkeypatch.setattr(hardware.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(hardware.platform, "machine", lambda: machine)

    def run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 0, stdout=sysctl.get(cmd[-1], "") + "\n")

    monkeypatch.setattr(hardware.subprocess, "run", run)


def test_rosetta_is_detected(monkeypatch):
    fake_mac(monkeypatch, "x86_64", {"sysctl.proc_translated": "1", "hw.optional.arm64": "1"})
    assert hardware.running_under_rosetta()


def test_native_arm_and_intel_macs_are_not_rosetta(monkeypatch):
    fake_mac(monkeypatch, "arm64", {"sysctl.proc_translated": "0", "hw.optional.arm64": "1"})
    assert not hardware.running_under_rosetta()
    fake_mac(monkeypatch, "x86_64", {"sysctl.proc_translated": "0", "hw.optional.arm64": ""})
    assert not hardware.running_under_rosetta()


def test_rosetta_warning_is_logged(monkeypatch, caplog):
    monkeypatch.setattr(hardware, "running_under_rosetta", lambda: True)
    hardware.setup(HardwareConfig(device="cpu"))
    assert "Rosetta 2" in caplog.text and "arm64 Python" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda_is_one_line_and_nonzero(tmp_path):
    out = run_cli("hardware=cuda", f"paths.outputs={tmp_path}")
    assert out.returncode == 2
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(errors) == 1, errors
    assert "hardware=cpu or hardware=auto" in errors[0]


def test_the_machine_record_names_the_cpu_and_its_isa_extensions():
    amd = {"model name": "AMD EPYC 7B13", "cpu family": "25", "model": "1", "stepping": "0",
           "flags": "fpu sse4_2 avx avx2 fma f16c bmi2"}
    assert hardware.cpu_model(amd) == "AMD EPYC 7B13 (cpu family 25, model 1, stepping 0)"
    assert hardware.cpu_flags(amd) == ["sse4_2", "avx", "avx2", "fma", "f16c"]
    arm = {"Features": "fp asimd evtstrm sve", "CPU implementer": "0x41"}
    assert hardware.cpu_flags(arm) == ["asimd", "sve"]
    record = hardware.machine()
    assert record["cpu_model"] and isinstance(record["cpu_flags"], str)
    assert record["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
