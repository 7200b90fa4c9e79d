"""The CUDA branches, run on the CPU: every command that takes --device, on two fake GPUs
(`tests/fake_cuda.py`), compared with the same command on the CPU; the device selection, the
reproducibility context, AMP and channels-last; the fake itself refusing what CUDA refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fake_cuda import DeviceMixError, FakeCuda, fake_faiss_gpu, is_fake_cuda
from ppvi_cli.cli.app import app
from ppvi_cli.data.synth import SynthConfig, synthesize
from ppvi_cli.device import deterministic, device_kind, rank_device, select_device
from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import load_checkpoint, save_checkpoint
from ppvi_cli.models.config import ModelConfig
from ppvi_cli.models.reid import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (32, 16)
REID = dict(backbone="resnet18", dual_stream=True, non_local=False, input_size=SIZE)


def invoke(*args: str) -> dict:
    """`ppvi --json --quiet ARGS` in this process (so the fake devices apply); its JSON document."""
    result = CliRunner().invoke(app, ["--json", "--quiet", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """10 synthetic ids x 6 cameras at 32x16 (4 train, 2 val, 4 test ids: SecureReID can hold out 2
    for its upgrade checks) and an untrained dual-stream ResNet-18 ReID checkpoint at that size."""
    root = tmp_path_factory.mktemp("fake_cuda")
    synthesize(root / "synth", SynthConfig(ids=10, images_per_camera=1, height=SIZE[0], width=SIZE[1], seed=3))
    torch.manual_seed(0)
    config = ModelConfig(num_classes=6, **REID)
    save_checkpoint(root / "reid.pt", build_model(config), config, {"made_by": "test_fake_cuda"})
    return {"root": root, "data": root / "synth", "reid": root / "reid.pt", "images": 60}


# --- the fake refuses what real CUDA refuses ---

def test_fake_cuda_refuses_the_device_mixes_real_cuda_refuses(fake_gpu):
    x = torch.randn(3, 4).to("cuda:1")
    assert is_fake_cuda(x, 1) and x.device == torch.device("cuda", 1) and x.is_cuda
    assert is_fake_cuda(x * torch.tensor(2.0), 1)  # a 0-dim CPU scalar is fine, as on a GPU
    with pytest.raises(DeviceMixError, match="same device"):
        x + torch.ones(3, 4)
    with pytest.raises(DeviceMixError, match="cuda:0 and cuda:1"):
        x + torch.ones(3, 4, device="cuda:0")
    with pytest.raises(DeviceMixError, match="indices"):
        torch.arange(5)[torch.tensor([0, 2], device="cuda:1")]
    assert is_fake_cuda(x[torch.tensor([0, 2])], 1)  # CPU indices into a CUDA tensor are fine
    with pytest.raises(TypeError, match="numpy"):
        x.numpy()
    with pytest.raises(TypeError, match="numpy"):
        np.asarray(x)
    with pytest.raises(DeviceMixError, match="generator"):
        torch.randn(3, generator=torch.Generator().manual_seed(0), device="cuda:1")
    with pytest.raises(DeviceMixError, match="generator"):
        x.uniform_(generator=torch.Generator())
    net = torch.nn.Conv2d(3, 2, 1)
    weight = net.weight
    net.to("cuda:1")
    assert net.weight is weight and is_fake_cuda(net.weight, 1) and isinstance(net.weight, torch.nn.Parameter)
    with pytest.raises(DeviceMixError):
        net(torch.randn(1, 3, 4, 4))  # a CPU input into a CUDA model
    moved = x.cpu()
    assert not is_fake_cuda(moved) and moved.device.type == "cpu"
    moved += 1  # a device move copies
    assert not torch.equal(moved, x.cpu())
    torch.use_deterministic_algorithms(True)
    try:
        image = torch.rand(1, 3, 4, 4, device="cuda:1", requires_grad=True)
        with pytest.raises(DeviceMixError, match="deterministic"):
            torch.nn.functional.interpolate(image, size=(8, 8), mode="bilinear")
    finally:
        torch.use_deterministic_algorithms(False)


# --- device selection ---

def test_select_device_takes_cuda_and_cuda_n_when_gpus_are_visible(fake_gpu, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert select_device("cuda") == torch.device("cuda:0")
    assert select_device("CUDA:1") == torch.device("cuda:1")
    assert select_device("auto") == torch.device("cuda:0")
    assert select_device("cpu") == torch.device("cpu")
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set before any cuBLAS call
    with pytest.raises(PPVIError, match="cuda:2 is not available.*device count=2"):
        select_device("cuda:2")
    assert device_kind("cuda:1") == "cuda (Fake CUDA 1)" and device_kind("cpu").startswith("cpu (")


def test_torchrun_device_is_the_local_ranks_gpu_and_never_overrides_an_explicit_one(fake_gpu):
    assert rank_device("cuda", "1") == torch.device("cuda:1")
    assert rank_device("auto", "0") == torch.device("cuda:0")
    assert rank_device("cuda:1", "1") == torch.device("cuda:1")  # explicit and agreeing
    assert rank_device("cpu", "5") == torch.device("cpu")
    with pytest.raises(PPVIError, match="local rank 0 runs on cuda:0"):
        rank_device("cuda:1", "0")  # was silently replaced by cuda:0
    with pytest.raises(PPVIError, match="local rank 2 has no GPU of its own"):
        rank_device("cuda", "2")
    with pytest.raises(PPVIError, match="LOCAL_RANK"):
        rank_device("cuda", "x")


def test_torchrun_device_with_one_visible_gpu_per_process(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert rank_device("cuda", "3") == torch.device("cuda:0")  # CUDA_VISIBLE_DEVICES per rank
    assert rank_device("cuda:0", "3") == torch.device("cuda:0")
    with pytest.raises(PPVIError, match="not available"):
        rank_device("cuda:1", "3")


# --- the reproducibility context ---

def _settings():
    b = torch.backends
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            b.cudnn.deterministic, b.cudnn.benchmark, b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision,
            b.cudnn.rnn.fp32_precision, b.fp32_precision)


@pytest.fixture
def restore_precision():
    before = _settings()
    yield
    b = torch.backends
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    b.cudnn.deterministic, b.cudnn.benchmark = before[2], before[3]
    b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision, b.cudnn.rnn.fp32_precision = before[4:7]


def test_deterministic_context_sets_and_restores_only_what_it_changes(restore_precision, monkeypatch):
    b = torch.backends
    # A user who set cuDNN convolutions' precision with the new API: the legacy cudnn.allow_tf32
    # read the old context made then raised ("mix of the legacy and new APIs").
    b.cudnn.conv.fp32_precision = "ieee"
    b.cudnn.rnn.fp32_precision = "tf32"
    with pytest.raises(RuntimeError, match="legacy and new"):
        _ = b.cudnn.allow_tf32
    b.cudnn.benchmark = True
    before = _settings()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with deterministic(torch.device("cuda", 1)):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()  # a missing kernel raises
        assert b.cudnn.deterministic and not b.cudnn.benchmark
        assert b.cudnn.conv.fp32_precision == "ieee" and b.cuda.matmul.fp32_precision == "ieee"  # float32 meant
        assert b.cudnn.rnn.fp32_precision == "tf32"  # not ours: untouched
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert _settings() == before
    with deterministic("cuda:0", tf32=True):
        assert b.cudnn.conv.fp32_precision == "tf32" and b.cuda.matmul.fp32_precision == "tf32"
    assert _settings() == before
    with pytest.raises(ZeroDivisionError), deterministic("cuda:0"):
        1 / 0
    assert _settings() == before  # restored on an error too
    with deterministic("cpu"):
        assert _settings() == before  # the CPU's kernels are deterministic already: nothing set
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(PPVIError, match="CUBLAS_WORKSPACE_CONFIG"), deterministic("cuda:0"):
        pass
    assert _settings() == before


def test_deterministic_context_on_a_torch_without_the_fp32_precision_api(restore_precision, monkeypatch):
    b = torch.backends
    monkeypatch.setattr(b.cudnn, "conv", None)  # what torch < 2.9 lacks
    before = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    with deterministic("cuda:0"):
        assert (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == (False, False)
    assert (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == before


# --- PixelFade ---

def _first_conv_inputs(net) -> list[torch.Tensor]:
    seen = []
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    return seen


def _pixelfade_batch(world, device: str, **params):
    """PixelFade's core on a mixed visible/infrared batch of images larger than the model's input
    (so the resize matmuls run), through the method's own setup: `(x_p, stats, first conv's
    (input, output) per forward, the host syncs of the fake GPU during the optimisation)`."""
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.pixelfade import noise_and_masks, pixelfade
    from ppvi_cli.data.transforms import normalize
    from ppvi_cli.models.dual_stream import modality_tensor

    method = build_method("pixelfade", model=str(world["reid"]), steps=4, masks=2, init_steps=2, final_steps=1,
                          **params)
    method.setup(device)
    gen = torch.Generator().manual_seed(1)
    x = normalize(torch.rand(4, 3, 40, 20, generator=gen)).to(device)
    if method.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    eta, set_id = (t.to(device) for t in noise_and_masks([1, 2, 3, 4], (3, 40, 20), method.masks))
    modality = modality_tensor(["visible", "infrared", "visible", "infrared"])
    seen = _first_conv_inputs(method._net)
    mark = len(FakeCuda.active.syncs) if FakeCuda.active else 0
    with deterministic(method._device):
        x_p, stats = pixelfade(method._net, x, modality, eta, set_id, method, SIZE)
    return x_p, stats, seen, FakeCuda.active.syncs[mark:] if FakeCuda.active else []


def test_pixelfade_amp_and_channels_last_on_cpu(world):
    x32, stats32, _, _ = _pixelfade_batch(world, "cpu")
    x_cl, stats_cl, seen, _ = _pixelfade_batch(world, "cpu", channels_last=True)
    # after the resize matmuls (NCHW out) the model still gets channels-last input, every step
    assert len(seen) == 5 and all(inp.is_contiguous(memory_format=torch.channels_last) for inp, _ in seen)
    assert torch.allclose(x_cl, x32, atol=1e-4) and torch.equal(stats_cl["steps_met"], stats32["steps_met"])
    x_amp, stats_amp, seen, _ = _pixelfade_batch(world, "cpu", amp=True)
    assert all(out.dtype == torch.bfloat16 for _, out in seen)  # the optimisation ran in bfloat16
    assert x_amp.dtype == torch.float32 and torch.isfinite(x_amp).all()
    assert not torch.equal(x_amp, x32) and (x_amp - x32).abs().max() < 0.5


def test_pixelfade_on_a_gpu_never_waits_for_it_in_its_loop(world, fake_gpu):
    x_p, stats, seen, syncs = _pixelfade_batch(world, "cuda:1", channels_last=True)
    assert is_fake_cuda(x_p, 1) and is_fake_cuda(stats["loss"], 1)
    # a dual-stream model with a mixed batch: routing on the host, no .tolist() per forward
    assert syncs == [] and fake_gpu.created[1] > 0 and fake_gpu.created[0] == 0
    assert all(inp.is_contiguous(memory_format=torch.channels_last) for inp, _ in seen)
    x_cpu, _, _, _ = _pixelfade_batch(world, "cpu", channels_last=True)
    assert torch.equal(x_p.cpu(), x_cpu)  # the CUDA branch computes what the CPU one does


def test_anonymize_pixelfade_on_cuda1_writes_the_bytes_of_the_cpu_run(world, fake_gpu, tmp_path):
    args = ["anonymize", "--method", "pixelfade", "--model", str(world["reid"]), "--input", str(world["data"]),
            "--steps", "3", "--batch-size", "8", "--format", "sysu", "--shard", "0/3"]
    gpu = invoke("--device", "cuda:1", *args, "--output", str(tmp_path / "gpu"))
    assert gpu["device"] == "cuda:1"
    assert fake_gpu.created[1] > 0 and fake_gpu.created[0] == 0
    cpu = invoke("--device", "cpu", *args, "--output", str(tmp_path / "cpu"))
    assert cpu["written"] == gpu["written"] > 0
    assert files(tmp_path / "gpu") == files(tmp_path / "cpu")


# --- ReID training (AGW and PEPR), killed on one GPU and resumed on the other ---

class _Killed(Exception):
    pass


def _reid_args(world, out: Path, recipe: str) -> list[str]:
    return ["train", "reid", "--data", str(world["data"]), "--out", str(out), "--recipe", recipe, "--backbone",
            "mobilenetv2", "--pretrained", "none", "--epochs", "2", "--p", "2", "--k", "2", "--size", "32x16",
            "--lr", "1e-3"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


@pytest.mark.parametrize("recipe", ["agw", "pepr"])
def test_train_reid_killed_on_cuda1_resumes_on_cuda0_to_the_cpu_weights(world, tmp_path, monkeypatch, recipe):
    from fake_cuda import fake_cuda
    from ppvi_cli.train.reid.trainer import TrainConfig, train_reid

    straight = invoke("--device", "cpu", *_reid_args(world, tmp_path / "cpu", recipe))
    assert straight["device"] == "cpu"

    def kill_in_epoch_2(event):
        if event.info["epoch"] == 2:
            raise _Killed

    config = TrainConfig(data=world["data"], out=tmp_path / "gpu", recipe=recipe, backbone="mobilenetv2",
                         pretrained="none", epochs=2, p=2, k=2, input_size=SIZE, lr=1e-3, device="cuda:1")
    with fake_cuda(monkeypatch) as gpu:
        with pytest.raises(_Killed):
            train_reid(config, on_progress=kill_in_epoch_2)
        assert gpu.created[1] > 0 and gpu.created[0] == 0
        resumed = invoke("--device", "cuda:0", *_reid_args(world, tmp_path / "gpu", recipe), "--resume")
        assert resumed["resumed_at_epoch"] == 1 and resumed["device"] == "cuda:0" and gpu.created[0] > 0
    a, b = _weights(tmp_path / "cpu" / "last.pt"), _weights(tmp_path / "gpu" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- features, eval (torch and faiss GPU), leakage ---

def test_features_eval_and_leak_on_cuda1_match_the_cpu(world, fake_gpu, monkeypatch, tmp_path):
    fake_faiss_gpu(monkeypatch, fake_gpu)
    cache = tmp_path / "cache"
    common = ["--model", str(world["reid"]), "--data", str(world["data"]), "--format", "sysu", "--batch-size", "8",
              "--cache-dir", str(cache)]
    gpu = invoke("--device", "cuda:1", "features", *common, "--out", str(tmp_path / "gpu.npz"))
    assert gpu["cache"] == "miss" and fake_gpu.created[1] > 0 and fake_gpu.created[0] == 0
    cpu = invoke("--device", "cpu", "features", *common, "--out", str(tmp_path / "cpu.npz"))
    assert cpu["cache"] == "miss"  # GPU features are not served to a CPU run
    assert cpu["cache_path"] != gpu["cache_path"]
    assert invoke("--device", "cuda:1", "features", *common, "--out", str(tmp_path / "again.npz"))["cache"] == "hit"
    with np.load(tmp_path / "gpu.npz") as g, np.load(tmp_path / "cpu.npz") as c:
        assert sorted(g.files) == sorted(c.files) and all(np.array_equal(g[k], c[k]) for k in g.files)

    def evaluate(device: str, backend: str, *source: str) -> dict:
        return invoke("--device", device, "eval", *source, "--protocol", "sysu-all", "--setting", "raw2raw",
                      "--trials", "2", "--backend", backend)

    reference = evaluate("cpu", "faiss", "--features", str(tmp_path / "cpu.npz"))
    on_torch = evaluate("cuda:1", "torch", "--features", str(tmp_path / "gpu.npz"))
    fake_gpu.calls.clear()
    on_faiss = evaluate("cuda:1", "faiss", "--model", str(world["reid"]), "--data", str(world["data"]), "--format",
                        "sysu", "--batch-size", "8", "--no-cache")
    assert "pairwise_distance_gpu" in fake_gpu.calls and fake_gpu.created[0] == 0
    backends = [doc["results"]["raw2raw"].pop("backend") for doc in (reference, on_torch, on_faiss)]
    assert backends == ["faiss-cpu", "torch", "faiss-gpu"]
    devices = [doc["results"]["raw2raw"].pop("device") for doc in (reference, on_torch, on_faiss)]
    assert devices == ["cpu", "cuda:1", "cuda:1"]
    assert on_torch["results"] == reference["results"] == on_faiss["results"]

    leak_gpu = invoke("--device", "cuda:1", "leak", "--features", str(tmp_path / "gpu.npz"), "--epochs", "5")
    leak_cpu = invoke("--device", "cpu", "leak", "--features", str(tmp_path / "cpu.npz"), "--epochs", "5")
    assert leak_gpu["results"]["gallery_raw"]["params"].pop("device") == "cuda:1"
    assert leak_cpu["results"]["gallery_raw"]["params"].pop("device") == "cpu"
    assert leak_gpu["results"] == leak_cpu["results"] and fake_gpu.created[0] == 0


# --- generators: SecureReID (killed on one GPU, resumed on the other), PPA, anonymize, recover, pose ---

GEN = ["--input-size", "64x32", "--num-downs", "5", "--ngf", "4", "--ndf", "4", "--backbone", "mobilenetv2",
       "--pretrained", "none", "--p", "2", "--k", "2", "--max-steps", "1", "--workers", "0"]


def _nets(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    from ppvi_cli.models.generator_checkpoint import load_run

    return {name: entry["state_dict"] for name, entry in load_run(path)["nets"].items()}


def test_generators_train_resume_anonymize_and_recover_on_cuda_like_on_the_cpu(world, tmp_path, monkeypatch):
    from fake_cuda import fake_cuda
    from ppvi_cli.train.generators.securereid import SecureReIDConfig, train_securereid

    data = str(world["data"])
    securereid = ["train", "generator", "--recipe", "securereid", "--data", data, "--epochs", "2", *GEN]
    invoke("--device", "cpu", *securereid, "--out", str(tmp_path / "sr_cpu"))

    def kill_after_epoch_1(event):
        if event.info.get("epoch") == 1 and "steps" in event.info:
            raise _Killed

    config = SecureReIDConfig(data=data, out=str(tmp_path / "sr_gpu"), epochs=2, input_size=(64, 32), num_downs=5,
                              ngf=4, ndf=4, backbone="mobilenetv2", pretrained="none", p=2, k=2, max_steps=1,
                              device="cuda:1")
    ppa = ["train", "generator", "--recipe", "ppa", "--data", data, "--epochs", "1", "--teacher", str(world["reid"]),
           "--pose", "groundtruth", *GEN, "--backbone", "resnet18"]  # the teacher's
    anonymize = ["anonymize", "--method", "generator", "--input", data, "--format", "sysu", "--batch-size", "16"]
    with fake_cuda(monkeypatch) as gpu:
        with pytest.raises(_Killed):
            train_securereid(config, on_progress=kill_after_epoch_1)
        assert gpu.created[1] > 0 and gpu.created[0] == 0
        invoke("--device", "cuda:0", *securereid, "--out", str(tmp_path / "sr_gpu"), "--resume")
        invoke("--device", "cuda:1", *ppa, "--out", str(tmp_path / "ppa"))
        for name in ("sr_gpu", "ppa"):
            invoke("--device", "cuda:1", *anonymize, "--checkpoint", str(tmp_path / name / "checkpoint.pt"),
                   "--output", str(tmp_path / f"{name}_anon_gpu"))
        rec = invoke("--device", "cuda:1", "recover", "--checkpoint", str(tmp_path / "sr_gpu" / "checkpoint.pt"),
                     "--input", str(tmp_path / "sr_gpu_anon_gpu"), "--output", str(tmp_path / "rec_gpu"),
                     "--raw", data)
        pose = invoke("--device", "cuda:1", "pose", "--data", data, "--out", str(tmp_path / "pose"))
    assert rec["written"] == rec["quality"]["images"] == world["images"] and pose["detection"]["visible"]["images"] > 0
    cpu_nets, gpu_nets = _nets(tmp_path / "sr_cpu" / "checkpoint.pt"), _nets(tmp_path / "sr_gpu" / "checkpoint.pt")
    assert cpu_nets.keys() == gpu_nets.keys()
    for name, weights in cpu_nets.items():
        assert all(torch.equal(weights[k], gpu_nets[name][k]) for k in weights), name
    for name in ("sr_gpu", "ppa"):
        invoke("--device", "cpu", *anonymize, "--checkpoint", str(tmp_path / name / "checkpoint.pt"),
               "--output", str(tmp_path / f"{name}_anon_cpu"))
        assert files(tmp_path / f"{name}_anon_gpu") == files(tmp_path / f"{name}_anon_cpu"), name


# --- the recovery attack: killed on one GPU, resumed on the other from an older checkpoint ---

def test_attack_killed_on_cuda1_resumes_on_cuda0_like_the_cpu_run(world, tmp_path, monkeypatch):
    from fake_cuda import fake_cuda
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.runfolder import RunFolder, stored_identity
    from ppvi_cli.attack.run import CHECKPOINT, AttackConfig, run_attack

    anon = tmp_path / "mosaic"
    anonymize_dataset(build_method("mosaic", block=4), world["data"], anon, fmt="sysu")
    args = ["attack", "--raw", str(world["data"]), "--anon", str(anon), "--size", "32x16", "--ngf", "4", "--epochs",
            "2", "--batch-size", "8"]
    straight = invoke("--device", "cpu", *args, "--out", str(tmp_path / "cpu"))

    def kill_in_epoch_2(event):
        if event.stage == "attack l1: train" and event.done > event.total // 2:
            raise _Killed

    config = AttackConfig(raw=world["data"], anon=anon, out=tmp_path / "gpu", size=SIZE, ngf=4, epochs=2, batch_size=8,
                          device="cuda:1")
    with fake_cuda(monkeypatch) as gpu:
        with pytest.raises(_Killed):
            run_attack(config, on_progress=kill_in_epoch_2)
        assert gpu.created[1] > 0 and gpu.created[0] == 0
        # what ppvi wrote before it stopped saving GPU random state: the resume must not need it
        payload = torch.load(tmp_path / "gpu" / "l1" / CHECKPOINT, weights_only=True)
        assert set(payload["rng"]) == {"torch", "shuffle"}
        payload["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 3
        with RunFolder(tmp_path / "gpu", stored_identity(tmp_path / "gpu"), shared=True) as folder:  # as if written
            folder.write(f"l1/{CHECKPOINT}", lambda fh: torch.save(payload, fh))  # by that older ppvi
        resumed = invoke("--device", "cuda:0", *args, "--out", str(tmp_path / "gpu"), "--resume")
        assert resumed["device"] == "cuda:0" and gpu.created[0] > 0
        assert not {"get_rng_state_all", "set_rng_state_all"} & set(gpu.calls)
    assert resumed["attackers"]["l1"]["history"] == straight["attackers"]["l1"]["history"]
    assert resumed["attackers"]["l1"]["images"] == straight["attackers"]["l1"]["images"]


def test_demo_runs_on_cuda1(fake_gpu, tmp_path):
    from ppvi_cli.demo import DemoConfig, run_demo

    config = DemoConfig(ids=4, methods=("securereid",), trials=1, attack_epochs=1, attack_ngf=4)
    results = run_demo(tmp_path / "demo", config, device="cuda:1")
    method = results["methods"]["securereid"]
    assert set(method) >= {"privacy", "eval", "attack", "recovery"} and Path(results["report"]).is_file()
    assert fake_gpu.created[1] > 0 and fake_gpu.created[0] == 0
