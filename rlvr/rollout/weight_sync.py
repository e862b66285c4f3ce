"""Moving the learner's weights into the rollout engines, by the fastest path available.

Three paths, one wire format. The sender packs every tensor into one flat byte buffer with a
:class:`WeightLayout` (name, dtype, shape, offset of each), so a sync is one transfer of one
buffer whatever the path, and the engine unpacks zero-copy views and hands them to vLLM's
``load_weights`` (in place: CUDA graphs and compiled code keep pointing at the same memory).

- ``object_store`` (any topology, CPU too): the buffer is copied to (pinned) host memory and
  put in Ray's object store once; each engine gets the ObjectRef and reads it zero-copy as a
  numpy array, then copies it to its GPU.
- ``cuda_ipc`` (learner and engines share one GPU): the buffer stays on the GPU; engines open
  it through a CUDA IPC handle (a few hundred bytes through Ray) and copy from it directly.
- ``nccl`` (learner and engines on different GPUs): the learner broadcasts the buffer over an
  NCCL group it forms with the engines (vLLM's ``StatelessProcessGroup`` +
  ``PyNcclCommunicator``, which live beside vLLM's own process groups in the engine).

``method="auto"`` picks ``cuda_ipc`` when every engine reports the sender's GPU, ``nccl`` when
none does, else ``object_store``. The training loop passes the placement plan's method
(``rlvr.plan``: colocate -> ``cuda_ipc``, split -> ``nccl``, CPU -> ``object_store``) with
``fallback=True``: a method the actual devices do not allow becomes ``object_store``.

    sender = WeightSender(engines)                    # in the learner's process
    stats = sender.push(model.state_dict(), version=step)

The engine side of each path is :class:`rlvr.rollout.vllm.VllmEngine` (``load_packed``,
``load_ipc``, ``init_weight_group`` / ``load_broadcast``); the HF engine has ``load_packed``
(object store only).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from rlvr.net import free_port
from rlvr.rollout._common import put, wait_all

SyncMethod = Literal["auto", "object_store", "cuda_ipc", "nccl"]
# A state dict, or its (name, tensor) pairs.
Weights = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
SYNC_METHODS = ("auto", "object_store", "cuda_ipc", "nccl")
# The loop's `sync/method` metric (metrics are floats): 0 = no sync that step.
SYNC_METHOD_CODES = {"object_store": 1.0, "cuda_ipc": 2.0, "nccl": 3.0}

# Every tensor starts on a 256-byte boundary: views of any dtype are legal and aligned.
_ALIGN = 256
log = logging.getLogger("rlvr.rollout")


@dataclass
class WeightLayout:
    """Where each tensor lives in a packed buffer. Plain lists: it crosses Ray cheaply."""

    names: list[str]
    dtypes: list[str]  # torch dtype names without the "torch." prefix, e.g. "bfloat16"
    shapes: list[list[int]]
    offsets: list[int]  # byte offset of each tensor in the buffer
    nbytes: int  # total buffer size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WeightLayout:
        return cls(**d)


def _named_tensors(weights: Weights) -> Iterator[tuple[str, torch.Tensor]]:
    items = weights.items() if isinstance(weights, Mapping) else weights
    seen: set[tuple[int, torch.dtype, tuple[int, ...]]] = set()
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"weight {name!r} is a {type(tensor).__name__}, expected a torch.Tensor"
            )
        # Tied weights (lm_head = embed_tokens) appear twice in a state dict but share
        # storage; send them once (vLLM ties them again on load). The first name wins, which
        # in HF state dicts is the embedding.
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if tensor.numel() > 0 and key in seen:
            continue
        seen.add(key)
        yield name, tensor.detach()


def plan_layout(
    weights: Weights,
    dtype: torch.dtype | None = None,
) -> tuple[WeightLayout, list[torch.Tensor]]:
    """The layout of ``weights`` packed (floating tensors cast to ``dtype`` if given)."""
    names, dtypes, shapes, offsets, tensors = [], [], [], [], []
    offset = 0
    for name, t in _named_tensors(weights):
        out_dtype = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        names.append(name)
        dtypes.append(str(out_dtype).removeprefix("torch."))
        shapes.append(list(t.shape))
        offsets.append(offset)
        tensors.append(t)
        offset += -(-t.numel() * out_dtype.itemsize // _ALIGN) * _ALIGN
    return WeightLayout(names, dtypes, shapes, offsets, offset), tensors


def pack_weights(
    weights: Weights,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, WeightLayout]:
    """Copy ``weights`` into one flat ``uint8`` buffer on ``device``; returns (buffer, layout).

    ``out`` reuses a buffer of at least ``layout.nbytes`` bytes (e.g. pinned host memory kept
    between syncs). Copies are issued asynchronously and synchronized before returning.
    """
    layout, tensors = plan_layout(weights, dtype)
    if out is not None:
        if out.dtype != torch.uint8 or out.numel() < layout.nbytes:
            raise ValueError(f"out must be a uint8 buffer of >= {layout.nbytes} bytes")
        buffer = out[: layout.nbytes]
    else:
        buffer = torch.empty(layout.nbytes, dtype=torch.uint8, device=device)
    for t, dt, off in zip(tensors, layout.dtypes, layout.offsets, strict=True):
        target_dtype = getattr(torch, dt)
        view = buffer[off : off + t.numel() * target_dtype.itemsize].view(target_dtype)
        view.copy_(t.reshape(-1), non_blocking=True)
    if buffer.is_cuda or any(t.is_cuda for t in tensors):
        torch.cuda.synchronize()
    return buffer, layout


def unpack_weights(buffer: torch.Tensor, layout: WeightLayout) -> list[tuple[str, torch.Tensor]]:
    """Views of ``buffer`` as the named tensors of ``layout`` (no copies)."""
    if buffer.dtype != torch.uint8 or buffer.numel() < layout.nbytes:
        raise ValueError(
            f"buffer must be uint8 with >= {layout.nbytes} bytes, got {buffer.dtype} x {buffer.numel()}"
        )
    out = []
    for name, dt, shape, off in zip(
        layout.names, layout.dtypes, layout.shapes, layout.offsets, strict=True
    ):
        dtype = getattr(torch, dt)
        numel = 1
        for s in shape:
            numel *= s
        out.append((name, buffer[off : off + numel * dtype.itemsize].view(dtype).view(shape)))
    return out


def unpack_payload(payload: Mapping[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The named CPU tensors of an object-store payload ``{"layout", "data"}`` (views of the
    store's read-only memory: copy out of them, never write)."""
    with warnings.catch_warnings():  # from_numpy warns about read-only arrays
        warnings.simplefilter("ignore", UserWarning)
        host = torch.from_numpy(payload["data"])
    return unpack_weights(host, WeightLayout.from_dict(payload["layout"]))


def current_gpu_uuid() -> str | None:
    """The UUID of this process's current CUDA device (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)


def choose_method(sender_gpu: str | None, engine_gpus: list[str | None]) -> SyncMethod:
    """The fastest path for this topology (see the module docstring)."""
    if sender_gpu is not None and engine_gpus and all(g == sender_gpu for g in engine_gpus):
        return "cuda_ipc"
    if (
        sender_gpu is not None
        and engine_gpus
        and all(g is not None and g != sender_gpu for g in engine_gpus)
    ):
        return "nccl"
    return "object_store"


def method_problem(
    method: str, sender_gpu: str | None, engine_gpus: list[str | None]
) -> str | None:
    """Why ``method`` cannot run between these devices (None: it can)."""
    if method == "cuda_ipc" and (sender_gpu is None or any(g != sender_gpu for g in engine_gpus)):
        return (
            "method='cuda_ipc' needs the sender and every engine on the same GPU; "
            "use 'nccl' or 'object_store' (or 'auto')"
        )
    if method == "nccl" and (sender_gpu is None or any(g is None for g in engine_gpus)):
        return "method='nccl' needs CUDA in the sender and every engine"
    return None


class WeightSender:
    """Pushes a learner's weights to rollout engine actors. Lives in the learner's process.

    Args:
        engines: actor handles of engines with the ``load_packed`` / ``load_ipc`` /
            ``load_broadcast`` methods of :class:`rlvr.rollout.vllm.VllmEngine`.
        method: ``auto`` (default), ``object_store``, ``cuda_ipc`` or ``nccl``.
        dtype: cast floating tensors to this dtype before sending (e.g. ``torch.bfloat16``
            for a learner holding fp32 master weights); None keeps them as they are.
        timeout_s: bound on each sync (and on forming the NCCL group).
        fallback: a ``method`` these devices do not allow becomes ``object_store`` (logged)
            instead of a ValueError.
    """

    def __init__(
        self,
        engines: list[Any],
        method: str = "auto",  # a SyncMethod, checked here (job specs carry plain strings)
        dtype: torch.dtype | None = None,
        timeout_s: float = 300.0,
        fallback: bool = False,
    ) -> None:
        if method not in SYNC_METHODS:
            raise ValueError(f"method must be one of {', '.join(SYNC_METHODS)}; got {method!r}")
        if not engines:
            raise ValueError("engines is empty: pass the rollout engine actor handles")
        self.engines = list(engines)
        self.dtype = dtype
        self.timeout_s = timeout_s
        self._gpu = current_gpu_uuid()
        engine_gpus = wait_all(
            [e.gpu_uuid.remote() for e in self.engines], timeout_s, "asking engines for their GPU"
        )
        if method == "auto":
            method = choose_method(self._gpu, engine_gpus)
        problem = method_problem(method, self._gpu, engine_gpus)
        if problem is not None and not fallback:
            raise ValueError(problem)
        if problem is not None:
            log.warning("weight sync falls back to object_store: %s", problem)
            method = "object_store"
        self.method: str = method
        self._pinned: torch.Tensor | None = None
        self._group: Any = None  # the NCCL group (vLLM's PyNcclCommunicator), formed on use

    # -- the three paths ------------------------------------------------------------------
    def push(
        self,
        weights: Weights,
        version: int,
        after_calls: list[int] | None = None,
    ) -> dict[str, float]:
        """Send ``weights`` (HF names) to every engine; returns timings in seconds and bytes.

        Blocks until every engine has loaded them (and reset its prefix cache), or holds
        them: ``after_calls[i]`` is the number of ``generate`` calls the driver had made to
        engine ``i`` before this push (``ReplicaGroup.calls_made``); an engine that has not
        yet started them all loads the weights when they have ended
        (:class:`rlvr.rollout._common.LoadOrder`). None: load at once.
        """
        if after_calls is not None and len(after_calls) != len(self.engines):
            raise ValueError(
                f"after_calls has {len(after_calls)} counts for {len(self.engines)} engines"
            )
        after: list[int | None] = (
            list(after_calls) if after_calls is not None else [None] * len(self.engines)
        )
        t0 = time.perf_counter()
        if self.method == "object_store":
            stats = self._push_object_store(weights, version, after)
        elif self.method == "cuda_ipc":
            stats = self._push_ipc(weights, version, after)
        else:
            stats = self._push_nccl(weights, version, after)
        stats["total_s"] = time.perf_counter() - t0
        return stats

    def _push_object_store(
        self, weights: Weights, version: int, after: list[int | None]
    ) -> dict[str, float]:
        t0 = time.perf_counter()
        weights = list(weights.items() if isinstance(weights, Mapping) else weights)
        layout, _ = plan_layout(weights, self.dtype)
        if self._pinned is None or self._pinned.numel() < layout.nbytes:
            # Pinned host memory makes the GPU -> host copy ~2x faster; kept between syncs.
            pin = torch.cuda.is_available()
            self._pinned = torch.empty(layout.nbytes, dtype=torch.uint8, pin_memory=pin)
        buffer, layout = pack_weights(weights, dtype=self.dtype, out=self._pinned)
        t1 = time.perf_counter()
        ref = put({"layout": layout.to_dict(), "data": buffer.numpy()})  # (no Ray: LocalRef)
        t2 = time.perf_counter()
        wait_all(
            [
                e.load_packed.remote(ref, version, n)
                for e, n in zip(self.engines, after, strict=True)
            ],
            self.timeout_s,
            "object-store weight sync",
        )
        t3 = time.perf_counter()
        return {"pack_s": t1 - t0, "put_s": t2 - t1, "load_s": t3 - t2, "bytes": layout.nbytes}

    def _push_ipc(
        self, weights: Weights, version: int, after: list[int | None]
    ) -> dict[str, float]:
        from torch.multiprocessing.reductions import reduce_tensor

        t0 = time.perf_counter()
        buffer, layout = pack_weights(weights, device="cuda", dtype=self.dtype)
        _, ipc_args = reduce_tensor(buffer)
        t1 = time.perf_counter()
        wait_all(
            [
                e.load_ipc.remote({self._gpu: ipc_args}, layout.to_dict(), version, n)
                for e, n in zip(self.engines, after, strict=True)
            ],
            self.timeout_s,
            "CUDA IPC weight sync",
        )
        t2 = time.perf_counter()
        # The engines have copied out of the buffer; free it and the IPC bookkeeping.
        del buffer
        torch.cuda.ipc_collect()
        return {"pack_s": t1 - t0, "load_s": t2 - t1, "bytes": layout.nbytes}

    def _push_nccl(
        self, weights: Weights, version: int, after: list[int | None]
    ) -> dict[str, float]:
        if self._group is None:
            self._group = self._form_group()
        t0 = time.perf_counter()
        buffer, layout = pack_weights(weights, device="cuda", dtype=self.dtype)
        t1 = time.perf_counter()
        refs = [
            e.load_broadcast.remote(layout.to_dict(), version, n)
            for e, n in zip(self.engines, after, strict=True)
        ]
        self._group.broadcast(buffer, src=0, stream=torch.cuda.current_stream())
        torch.cuda.synchronize()
        wait_all(refs, self.timeout_s, "NCCL weight sync")
        t2 = time.perf_counter()
        return {"pack_s": t1 - t0, "load_s": t2 - t1, "bytes": layout.nbytes}

    def _form_group(self) -> Any:
        """Rank 0 (this process) + one rank per engine, outside any torch.distributed group."""
        import ray
        from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

        host = ray.util.get_node_ip_address()
        port = free_port("")  # all interfaces: engines on other nodes connect
        world = 1 + len(self.engines)
        refs = [
            e.init_weight_group.remote(host, port, rank, world)
            for rank, e in enumerate(self.engines, start=1)
        ]
        group = stateless_init_process_group(host, port, 0, world, torch.cuda.current_device())
        wait_all(refs, self.timeout_s, "forming the NCCL weight-sync group")
        return group

    def close(self) -> None:
        """Drop the pinned buffer and the NCCL group."""
        self._pinned = None
        self._group = None
