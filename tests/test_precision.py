"""Mixed precision policy (utils/precision.py): dtype per device, channels-last, and bf16 pretraining and
fine-tuning steps close to fp32."""
import pytest
import torch
from script_module import load_script

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from utils import precision
from utils.precision import amp_dtype_for, autocast, grad_scaler, match_layout, to_channels_last

torch.set_num_threads(1)


def test_amp_dtype_under_dataparallel_is_fp16(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype_for(True, cuda) == torch.bfloat16
    # DataParallel replicas re-enter autocast without the dtype: fp16, which gets a GradScaler.
    assert amp_dtype_for(True, cuda, data_parallel=True) == torch.float16
    assert amp_dtype_for(False, cuda, data_parallel=True) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype_for(True, cuda) == torch.float16
    assert grad_scaler(torch.float16, torch.device("cpu")) is not None
    assert grad_scaler(torch.bfloat16, torch.device("cpu")) is None


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
    clip = torch.randn(4, 4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    cpu = torch.device("cpu")
    model.eval()  # no dropout: both passes see the same network
    with torch.no_grad():
        fp32, _ = finetune.forward_loss(model, clip, labels, cpu)
    to_channels_last(model)
    bf16, logits = finetune.forward_loss(model, clip, labels, cpu, torch.bfloat16)
    assert logits.dtype == bf16.dtype == torch.float32  # the loss is computed in float32 from autocast logits
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.05)
    head = model.final_fc[1].weight.detach().clone()
    finetune._step(bf16, torch.optim.SGD(model.parameters(), lr=0.1), scaler=None)
    assert torch.isfinite(model.final_fc[1].weight).all() and not torch.equal(model.final_fc[1].weight, head)
