"""Mixed precision policy (utils/precision.py): dtype per device, channels-last, bf16 pretraining and
fine-tuning steps close to fp32, float32 logits, and gradient diagnostics under fp16."""
import json
import math

import pytest
import torch
from script_module import load_script
from torch import nn

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from train.pretrain_loop import unscaled_gradient_norms
from utils import precision
from utils.precision import amp_dtype_for, autocast, cpu_has_bf16, grad_scaler, match_layout, to_channels_last

torch.set_num_threads(1)


def test_amp_dtype_on_cuda_is_bf16_only_where_native(monkeypatch):
    cuda = torch.device("cuda", 0)
    # A T4 / RTX 20xx: torch emulates bf16 there (its default check says yes), cuDNN has no bf16 convolutions.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert amp_dtype_for(True, cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert amp_dtype_for(True, cuda) == torch.bfloat16
    assert amp_dtype_for(False, cuda) is None
    assert grad_scaler(torch.float16, torch.device("cpu")) is not None
    assert grad_scaler(torch.bfloat16, torch.device("cpu")) is None


@pytest.mark.parametrize(("flags", "native"), [
    ("fpu sse avx2 avx512f avx512bw avx512_vnni", False),  # AVX-512 alone: oneDNN emulates bf16
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx2 amx_bf16 amx_tile", True),
    ("fp asimd", False),
])
def test_cpu_bf16_needs_avx512_bf16_or_amx(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_bf16(cpuinfo) is native
    assert cpu_has_bf16(tmp_path / "missing") is False


def test_amp_on_cpu_is_bf16_only_with_native_support(monkeypatch, caplog):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert amp_dtype_for(True, cpu) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="cocon.precision"):
        assert amp_dtype_for(True, cpu) is None
    assert "no native bf16" in caplog.text
    assert amp_dtype_for(False, cpu) is None


def test_channels_last_converts_3d_convs_and_inputs_follow():
    model = DPCRNN("resnet10", in_channels=3, img_dim=32, seq_len=4, num_seq=4, pred_step=1)
    conv = model.backbone.conv1
    x = torch.randn(2, 3, 4, 32, 32)
    assert match_layout(x, conv) is x  # contiguous weights: input untouched
    to_channels_last(model)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    assert match_layout(x, conv).is_contiguous(memory_format=torch.channels_last_3d)
    assert model.network_pred[0].weight.is_contiguous()  # 2-D convs keep their layout


def test_bf16_step_loss_close_to_fp32_on_the_same_batch():
    torch.manual_seed(0)
    model = DPCRNN("resnet10", in_channels=3, img_dim=32, seq_len=4, num_seq=4, pred_step=1).eval()
    clip = torch.randn(4, 4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    cfg = CoConLossConfig(temperature=0.07)
    cpu = torch.device("cpu")
    with torch.no_grad():
        fp32, _ = cocon_loss({"imgs": tuple(t.float() for t in model(clip))}, cfg)
        to_channels_last(model)
        with autocast(cpu, torch.bfloat16):
            outputs = model(clip)
        bf16, _ = cocon_loss({"imgs": tuple(t.float() for t in outputs)}, cfg)
    assert outputs[0].dtype == torch.bfloat16  # the encoder really ran in bf16
    # bf16 keeps 8 bits of mantissa: the unit-vector scores move by ~1e-2, the loss by a few percent at most.
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.05)


def test_bf16_finetuning_step_loss_close_to_fp32_on_the_same_batch():
    finetune = load_script("finetune")
    torch.manual_seed(0)
    model = load_script("action_classifier").ActionClassifier("resnet10", 3, 32, seq_len=4, num_seq=4, num_classes=5)
    clip = torch.randint(0, 256, (4, 4, 3, 4, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    cpu = torch.device("cpu")
    model.eval()  # no dropout: both passes see the same network
    with torch.no_grad():
        fp32, _ = finetune.forward_loss(model, clip, labels, "imgs", cpu)
    to_channels_last(model)
    head_dtypes = []
    model.final_fc[1].register_forward_hook(lambda m, inputs, out: head_dtypes.append((inputs[0].dtype, out.dtype)))
    bf16, logits = finetune.forward_loss(model, clip, labels, "imgs", cpu, torch.bfloat16)
    assert logits.dtype == bf16.dtype == torch.float32
    # The last linear layer itself runs in float32 (not bf16 logits cast afterwards).
    assert head_dtypes == [(torch.float32, torch.float32)]
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.05)
    head = model.final_fc[1].weight.detach().clone()
    finetune._step(bf16, torch.optim.SGD(model.parameters(), lr=0.1), scaler=None)
    assert torch.isfinite(model.final_fc[1].weight).all() and not torch.equal(model.final_fc[1].weight, head)


def test_gradient_norms_under_fp16_are_those_of_the_unscaled_gradient():
    torch.manual_seed(0)
    backbone = nn.Linear(8, 8)
    x = torch.randn(4, 8)

    def terms() -> dict[str, torch.Tensor]:
        # A gradient of about 1e-8 per weight: below fp16's smallest number, as small CPC gradients are.
        with torch.autocast("cpu", dtype=torch.float16):
            out = backbone(x)
        assert out.dtype == torch.float16
        return {"cpc/imgs": out.float().sum() * 1e-8}  # losses are float32 from the fp16 outputs

    exact = unscaled_gradient_norms({"cpc/imgs": (backbone(x).sum() * 1e-8)}, "imgs", backbone, None)["grad_norm/imgs/cpc"]
    assert unscaled_gradient_norms(terms(), "imgs", backbone, None)["grad_norm/imgs/cpc"] == 0.0  # underflows unscaled
    scaled = unscaled_gradient_norms(terms(), "imgs", backbone, torch.amp.GradScaler("cpu", init_scale=2.0**16))
    assert scaled["grad_norm/imgs/cpc"] == pytest.approx(exact, rel=1e-2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv3d_over_two_time_steps_leaves_bf16_autocast(channels_last):
    """The convolutions whose bf16 weight gradient oneDNN gets wrong (temporal kernel 3, stride 1, 2 time
    steps) run in float32: output and weight gradient equal float32's; other time lengths stay bf16."""
    torch.manual_seed(0)
    conv = precision.Conv3d(8, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 2, 4, 4)
    if channels_last:
        conv.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    fp32_out = conv(x)
    (fp32_grad,) = torch.autograd.grad(fp32_out.square().sum(), [conv.weight])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        assert conv(torch.randn(2, 8, 3, 4, 4)).dtype == torch.bfloat16
        strided = precision.Conv3d(8, 8, 3, stride=2, padding=1)
        assert strided(torch.randn(2, 8, 2, 4, 4)).dtype == torch.bfloat16
    (grad,) = torch.autograd.grad(out.square().sum(), [conv.weight])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fp32_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, fp32_grad, rtol=1e-4, atol=1e-4)


def test_bf16_pretraining_keeps_losses_and_gradients_finite(monkeypatch, tmp_path):
    """Pretraining under bf16 autocast (forced, so it runs on any CPU) with 5-frame blocks, whose layer4 sees
    2 time steps: every loss and every gradient of every step is finite."""
    from tiny_dataset import make_tiny_dataset

    from train import model_trainer

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda *_: True)
    steps = []
    adam_step = torch.optim.Adam.step

    def checked_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        steps.append(all(torch.isfinite(g).all() for g in grads) and len(grads) > 0)
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", checked_step)
    dtypes = []
    policy = model_trainer.amp_dtype_for
    monkeypatch.setattr(model_trainer, "amp_dtype_for", lambda *a, **k: dtypes.append(policy(*a, **k)) or dtypes[-1])
    csv_root = make_tiny_dataset(tmp_path / "data", videos_per_class=4, num_frames=20)
    args = model_trainer.get_args_parser().parse_args([
        "--dataset", "tiny", "--csv_root", str(csv_root), "--net", "resnet10", "--img_dim", "32",
        "--modalities", "imgs_flow", "--num_seq", "4", "--seq_len", "5", "--ds", "1", "--pred_step", "2",
        "--batch_size", "2", "--epochs", "2", "--num_workers", "0", "--save_dir", str(tmp_path / "runs"),
        "--val_fraction", "0.25", "--ft_freq", "0", "--amp", "--seed", "0"])
    result = model_trainer.main(args)
    history = [json.loads(line) for line in (result["exp_dir"] / "log.jsonl").read_text().splitlines()]
    assert dtypes == [torch.bfloat16] and len(history) == 2
    assert len(steps) >= 8 and all(steps)  # 2 views x 2 epochs x 2+ steps
    for epoch in history:
        for split in ("train", "val"):
            assert all(math.isfinite(value) for value in epoch[split].values()), epoch[split]


@pytest.mark.parametrize(("flags", "kind"), [
    ("fpu avx2 avx512f avx512_bf16", "AVX512-BF16"),
    ("fpu avx2 avx512f amx_bf16 amx_tile", "AMX"),
    ("fpu avx2 avx512f", "AVX512"),
    ("fpu avx2", "AVX2"),
])
def test_describe_cpu_names_the_model_and_its_widest_vector_extension(tmp_path, monkeypatch, flags, kind):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    described = precision.describe_cpu(cpuinfo)
    assert described.startswith(f"AMD EPYC, {kind} (kernels: ") and described.endswith(", ONEDNN_MAX_CPU_ISA=AVX2)")
    assert precision.describe_cpu(tmp_path / "missing").startswith("unknown CPU, no AVX2")
