"""The replica wrapper (utils.distributed.ReplicaInput) that every DataParallel replica runs: the uint8 → float
conversion and autocast happen inside it, on the model's device, and a replica's weight copies get their
channels-last layout back. DataParallel with no GPU calls its module directly, so it is run here on the CPU;
what only a replica sees (default-layout weight copies) is reproduced by hand as torch's replicate builds it."""
import pytest
import torch
from torch import nn

from train.model_3d import DPCRNN
from train.pretrain_loop import forward_views
from utils.augmentation import model_input
from utils.distributed import DistInfo, ReplicaInput, unwrap, wrap_model
from utils.precision import to_channels_last, uses_channels_last

torch.set_num_threads(1)
CPU = DistInfo(0, 1, 0, torch.device("cpu"), False)


def _encoder() -> DPCRNN:
    torch.manual_seed(0)
    return DPCRNN("resnet10", 3, 32, seq_len=2, num_seq=4, pred_step=2).eval()


def _blocks(batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 4, 3, 2, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _first_conv_inputs(model: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.backbone.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    return seen


def test_dataparallel_runs_the_wrapper_on_uint8_blocks():
    model = _encoder()
    seen = _first_conv_inputs(model)
    dp = nn.DataParallel(ReplicaInput(model, "imgs"))
    assert unwrap(dp) is model
    with torch.no_grad():
        pred, feature = dp(_blocks())
        ref_pred, ref_feature = model(model_input(_blocks(), "imgs", "cpu"))
    torch.testing.assert_close(pred, ref_pred)
    torch.testing.assert_close(feature, ref_feature)
    assert seen[0].dtype == torch.float32  # made float inside the wrapper
    with pytest.raises(TypeError, match="uint8"):  # only the loader's uint8 crosses to the replicas
        dp(model_input(_blocks(), "imgs", "cpu"))


def test_wrapper_enters_autocast_itself():
    # DataParallel's replica threads re-enter autocast with the device's default dtype; the wrapper's own
    # autocast (inside the replica) is what sets the dtype, so the caller enters none.
    model = to_channels_last(_encoder())
    seen = _first_conv_inputs(model)
    with torch.no_grad():
        pred, _ = nn.DataParallel(ReplicaInput(model, "imgs", torch.bfloat16))(_blocks())
    assert not torch.is_autocast_enabled("cpu")
    assert pred.dtype == torch.bfloat16
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)


def _replica_of(model: nn.Module) -> nn.Module:
    """What torch's replicate gives a replica: modules marked ``_is_replica`` whose weights are plain attributes,
    differentiable default-layout copies of the parameters (nn.parallel's Broadcast returns contiguous tensors)."""
    memo = {}
    for name, module in model.named_modules():
        clone = module._replicate_for_data_parallel()
        for key, param in module._parameters.items():
            setattr(clone, key, None if param is None else param.contiguous() * 1)  # as replicate does
        memo[name] = clone
    for name, clone in memo.items():
        for child_name in list(clone._modules):
            clone._modules[child_name] = memo[f"{name}.{child_name}" if name else child_name]
    return memo[""]


def test_a_replica_gets_channels_last_back_and_gradients_reach_the_parameters():
    model = to_channels_last(_encoder())
    wrapper = ReplicaInput(model, "imgs")
    replica = _replica_of(wrapper)
    assert replica._is_replica and not uses_channels_last(replica.model)  # the layout the broadcast left
    seen = _first_conv_inputs(replica.model)
    pred, feature = replica(_blocks())
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d) and not seen[0].is_contiguous()
    assert uses_channels_last(replica.model)
    (pred.float().sum() + feature.float().sum()).backward()
    grad = model.backbone.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # The original model is untouched: its parameters are still Parameters, channels-last.
    assert isinstance(model.backbone.conv1.weight, nn.Parameter) and uses_channels_last(model)


def test_wrapped_model_places_the_conversion_on_the_model_device():
    # meta tensors carry shapes and devices only: the whole forward is placed on the model's device.
    model = _encoder()
    wrapped = wrap_model(model, "imgs", DistInfo(0, 1, 0, torch.device("meta"), False), n_gpu=1)
    assert unwrap(wrapped) is model and next(model.parameters()).device.type == "meta"
    seen = _first_conv_inputs(model)
    outputs = forward_views({"imgs": wrapped}, {"imgs": _blocks()}, torch.device("meta"))
    pred, feature = outputs["imgs"]
    assert seen[0].device.type == "meta" and seen[0].dtype == torch.float32
    assert pred.device.type == feature.device.type == "meta" and pred.dtype == torch.float32


def test_bare_and_wrapped_models_give_the_same_outputs():
    model = _encoder()
    with torch.no_grad():
        bare = forward_views({"imgs": model}, {"imgs": _blocks()}, torch.device("cpu"))["imgs"]
        wrapped = forward_views({"imgs": wrap_model(model, "imgs", CPU, 1)}, {"imgs": _blocks()}, torch.device("cpu"))["imgs"]
    for a, b in zip(bare, wrapped):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
