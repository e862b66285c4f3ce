"""The placement plan: where a job's engines and learners run, and whether they fit.

From a :class:`~rlvr.config.JobSpec` and the cluster's resources (read from Ray, or given on
the command line) :func:`make_plan` decides, without starting anything:

- the layout: ``cpu`` (no GPU: HF engines and learners on CPUs, weights through the object
  store; ``engines_in_driver`` when the engine runs in the driver's process beside the
  in-process learner: ``placement.mode: colocate``, or ``auto`` for a synchronous run with
  one replica and ``num_learners: 0``), ``colocate`` (engines and learners share each GPU: an engine takes
  ``rollout.gpu_memory_utilization`` of it, the learner the rest; weights by CUDA IPC) or
  ``split`` (rollout GPUs apart from learner GPUs; weights over NCCL). ``placement.mode:
  auto`` splits when the GPUs hold ``replicas x tensor_parallel_size`` engine GPUs plus one
  GPU per learner, else colocates;
- every actor with its node, GPUs and GPU share; a tensor-parallel engine's GPUs on one
  node; one placement group per node used (``STRICT_PACK``, a bundle per GPU);
- the memory of each GPU (:mod:`rlvr.plan.memory`), and the problems that stop the job,
  each naming the spec field and the fix.

The plan is plain data (:meth:`Plan.to_dict`, stable JSON with sorted keys): ``rlvr plan``
prints it, ``POST /v1/jobs?dry_run=true`` returns it, the trainer places its actors by it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvr.plan.memory import (
    GiB,
    ModelShape,
    engine_memory,
    learner_memory,
    lora_param_count,
    param_count,
    qwen25_shape,
)

# GPU memory by the accelerator type Ray reports (``accelerator_type:<X>``), in GB as sold.
ACCELERATOR_MEMORY_GB: dict[str, float] = {
    "A10G": 24, "L4": 24, "A100-40G": 40, "L40S": 48, "A100-80G": 80, "A100": 80,
    "H100": 80, "H200": 141, "B200": 180,
}  # fmt: skip
DEFAULT_GPU_MEMORY_GB = 80.0  # when Ray cannot say (declared GPUs, unknown types)
MAX_GPUS = 4096
MAX_NODES = 1024


@dataclass(frozen=True)
class Node:
    gpus: int
    gpu_memory_bytes: int
    cpus: float = 1.0


@dataclass(frozen=True)
class Cluster:
    """What the plan places onto. ``source``: ``given`` (command line), ``ray`` or ``this
    machine`` (a run without Ray)."""

    nodes: tuple[Node, ...]
    source: str = "given"

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)


def cluster_from_args(gpus: int, gpu_memory_gb: float | None = None, nodes: int = 1) -> Cluster:
    """``gpus`` spread evenly over ``nodes`` nodes of ``gpu_memory_gb`` GB GPUs."""
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes must be 1..{MAX_NODES}, got {nodes}")
    if not 0 <= gpus <= MAX_GPUS:
        raise ValueError(f"--gpus must be 0..{MAX_GPUS}, got {gpus}")
    if gpus % nodes:
        raise ValueError(f"--gpus {gpus} does not spread evenly over --nodes {nodes}")
    mem = DEFAULT_GPU_MEMORY_GB if gpu_memory_gb is None else gpu_memory_gb
    if not 1 <= mem <= 4096:
        raise ValueError(f"--gpu-memory-gb must be 1..4096, got {gpu_memory_gb}")
    node = Node(gpus=gpus // nodes, gpu_memory_bytes=int(mem * 1e9))
    return Cluster(nodes=(node,) * nodes, source="given")


def _node(resources: dict[str, float], gpu_memory_gb: float | None) -> Node:
    """A node from its Ray resources; GPU memory from the accelerator type when not given."""
    mem = gpu_memory_gb
    if mem is None:
        types = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
        mem = next(
            (ACCELERATOR_MEMORY_GB[t] for t in types if t in ACCELERATOR_MEMORY_GB),
            DEFAULT_GPU_MEMORY_GB,
        )
    return Node(
        gpus=int(resources.get("GPU", 0)),
        gpu_memory_bytes=int(mem * 1e9),
        cpus=float(resources.get("CPU", 0.0)),
    )


def cluster_from_ray(gpu_memory_gb: float | None = None) -> Cluster:
    """The alive nodes of the Ray cluster this process is connected to. GPU memory comes from
    ``gpu_memory_gb``, else the node's accelerator type, else :data:`DEFAULT_GPU_MEMORY_GB`."""
    import ray

    nodes = []
    for info in ray.nodes():
        if not info.get("Alive"):
            continue
        nodes.append(_node(info.get("Resources", {}), gpu_memory_gb))
    # GPU nodes first (the plan numbers nodes in this order), largest first.
    nodes.sort(key=lambda n: (-n.gpus, -n.cpus))
    return Cluster(nodes=tuple(nodes), source="ray")


def cluster_without_ray() -> Cluster:
    """This machine as a one-node CPU cluster, for a run that starts no Ray cluster
    (:func:`rlvr.train.run` plans on it first: a run whose plan places no actor needs none)."""
    import os

    node = Node(gpus=0, gpu_memory_bytes=0, cpus=float(os.cpu_count() or 1))
    return Cluster(nodes=(node,), source="this machine")


def cluster_from_status(
    status: dict[str, Any], gpu_memory_gb: float | None = None
) -> Cluster | None:
    """The cluster from the Ray dashboard's ``GET /api/cluster_status`` answer (what the
    service reads through the Jobs API); None until the nodes have reported."""
    report = (status.get("data") or {}).get("clusterStatus", {}).get("loadMetricsReport", {})
    by_node = report.get("usageByNode") or {}
    nodes = []
    for usage in by_node.values():
        res = {k: v[1] for k, v in usage.items() if isinstance(v, list) and len(v) == 2}
        nodes.append(_node(res, gpu_memory_gb))
    if not nodes:
        return None
    nodes.sort(key=lambda n: (-n.gpus, -n.cpus))
    return Cluster(nodes=tuple(nodes), source="ray")


# -- the model's shape -----------------------------------------------------------------------
def model_shape(path: str) -> ModelShape | None:
    """The shape of ``model.path``: a Qwen2.5 id from the table, a directory's config.json,
    or a ``tiny:`` recipe; None when none of those says (the plan then skips memory)."""
    shape = qwen25_shape(path)
    if shape is not None:
        return shape
    if path.startswith("tiny:"):
        from rlvr.models.resolve import _parse_tiny

        try:
            recipe = _parse_tiny(path)
        except LookupError:
            return None
        t = recipe.shape
        vocab = -(-recipe.vocab_size // 64) * 64
        return ModelShape(t.hidden, t.layers, t.heads, t.kv_heads, t.intermediate, vocab, True)
    config = Path(path).expanduser() / "config.json"
    try:
        c = json.loads(config.read_text())
        return ModelShape(
            hidden=int(c["hidden_size"]),
            layers=int(c["num_hidden_layers"]),
            heads=int(c["num_attention_heads"]),
            kv_heads=int(c.get("num_key_value_heads") or c["num_attention_heads"]),
            intermediate=int(c["intermediate_size"]),
            vocab=int(c["vocab_size"]),
            tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- the plan --------------------------------------------------------------------------------
@dataclass
class Actor:
    name: str  # engine-0, learner-0
    role: str  # engine | learner
    node: int
    gpus: list[int]  # GPU indices on that node (empty on CPU)
    gpu_share: float  # Ray GPUs per GPU of this actor (fraction of each of its GPUs)
    memory_bytes: dict[str, int] = field(default_factory=dict)  # per GPU


@dataclass
class Plan:
    mode: str  # cpu | colocate | split
    engine: str  # hf | vllm
    sync: str  # cuda_ipc | nccl | object_store
    num_learners: int  # learner actors (0: the learner runs in the driver, CPU only)
    tensor_parallel_size: int
    cluster: dict[str, Any]
    actors: list[Actor]
    gpus: list[dict[str, Any]]  # per GPU used: node, gpu, actors, used/capacity bytes
    model: dict[str, Any]  # params, trainable_params (None when the shape is unknown)
    problems: list[dict[str, Any]]  # {"loc": [...], "msg": ...}: why the job cannot run
    notes: list[str]
    # CPU only: the one HF engine runs in the driver's process (rlvr.rollout._common
    # .InProcessEngine) instead of an actor, beside the learner there
    engines_in_driver: bool = False
    # ... on a thread of its own, so that it works while the learner learns (evals, and an
    # asynchronous run's rollouts); not when the learner draws random numbers (LoRA dropout)
    engine_thread: bool = False

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def places_actors(self) -> bool:
        """Whether any engine or learner runs in a process of its own (and so needs a Ray
        cluster). Only a CPU run with its engine in the driver places none: the engine there
        implies the learner there (``num_learners: 0``)."""
        return not self.engines_in_driver

    @property
    def engines_work_beside_learner(self) -> bool:
        """Whether the engines can generate while the learner learns: actors always, an
        engine in the driver on its own thread. Then an eval runs on the engines during the
        next step's learning instead of between steps (docs/design.md, "Evals beside the
        next step")."""
        return not self.engines_in_driver or self.engine_thread

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fits"] = self.fits
        d["placement_groups"] = self.placement_groups()
        return json.loads(json.dumps(d, sort_keys=True))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    def actor(self, name: str) -> Actor:
        return next(a for a in self.actors if a.name == name)

    @property
    def gpu_count(self) -> int:
        """Whole GPUs this job holds while it runs (what an admission queue waits for)."""
        return sum(len(gs) for gs in self.node_gpus().values())

    def node_gpus(self) -> dict[int, list[int]]:
        """node -> the GPU indices the plan uses there (the order of its bundles)."""
        used: dict[int, set[int]] = {}
        for a in self.actors:
            used.setdefault(a.node, set()).update(a.gpus)
        return {n: sorted(gs) for n, gs in sorted(used.items()) if gs}

    def placement_groups(self) -> list[dict[str, Any]]:
        """One STRICT_PACK group per node used: a ``{"GPU": 1}`` bundle per GPU."""
        return [
            {"node": n, "strategy": "STRICT_PACK", "bundles": [{"GPU": 1.0} for _ in gs]}
            for n, gs in self.node_gpus().items()
        ]


def _problem(loc: tuple[str, ...], msg: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg}


def _gb(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def _micro_batch_tokens(spec: Any, learners: int) -> int:
    a = spec.algorithm
    if a.micro_batch_tokens is not None:
        return a.micro_batch_tokens
    rows = min(a.micro_batch_size, -(-a.prompts_per_step * a.group_size // max(learners, 1)))
    return rows * (spec.data.max_prompt_tokens + spec.rollout.max_new_tokens)


def _choose_mode(spec: Any, gpus: int, engine_gpus: int, learners: int) -> str:
    if gpus == 0:
        return "cpu"
    mode = spec.placement.mode
    if mode == "auto":
        return "split" if engine_gpus + learners <= gpus else "colocate"
    return mode


def make_plan(
    spec: Any, cluster: Cluster, shape: ModelShape | None = None, sharding: str | None = None
) -> Plan:
    """The placement of ``spec`` on ``cluster`` (``shape``: the model's, else looked up;
    ``sharding``: ``fsdp`` spreads the learner state over the learners, default
    ``algorithm.sharding`` when the spec has it, else none)."""
    a, r, p = spec.algorithm, spec.rollout, spec.placement
    shape = shape or model_shape(spec.model.path)
    gpus, tp, replicas = cluster.gpus, r.tensor_parallel_size, r.replicas
    problems: list[dict[str, Any]] = []
    notes: list[str] = []

    # How many learners: the spec's, else one per learner GPU asked for, else one. On a CPU
    # cluster num_learners=0 keeps the learner in the driver (the numerics of a local run).
    learners = (a.num_learners or p.learner_gpus or 1) if gpus else a.num_learners
    engine_gpus = replicas * tp
    mode = _choose_mode(spec, gpus, engine_gpus, learners)
    engine = r.engine
    if engine == "auto":
        engine = "vllm" if gpus else "hf"
    in_driver = False
    if mode == "cpu":
        if r.engine == "vllm":
            problems.append(_problem(("rollout", "engine"), "vllm needs GPUs and this cluster "
                                     "has none: use engine: hf (or auto), or add GPU nodes"))  # fmt: skip
        if p.rollout_gpus or p.learner_gpus:
            notes.append("no GPUs: placement.rollout_gpus/learner_gpus are ignored")
        in_driver = _engines_in_driver(spec, learners, problems)
    else:
        if p.rollout_gpus is not None and p.rollout_gpus != engine_gpus:
            problems.append(_problem(("placement", "rollout_gpus"),
                f"rollout_gpus={p.rollout_gpus} but rollout.replicas x tensor_parallel_size = "
                f"{engine_gpus}: set one to match the other"))  # fmt: skip
        if p.learner_gpus is not None and p.learner_gpus != learners:
            problems.append(_problem(("placement", "learner_gpus"),
                f"learner_gpus={p.learner_gpus} but algorithm.num_learners={a.num_learners} "
                "(one GPU per learner): set one to match the other"))  # fmt: skip
        need = engine_gpus + learners if mode == "split" else max(engine_gpus, learners)
        if need > gpus:
            loc = ("placement", "mode") if p.mode == "split" else ("rollout", "replicas")
            problems.append(_problem(loc,
                f"{mode} needs {need} GPUs ({replicas} replica(s) x tensor_parallel_size {tp}"
                f"{' + ' if mode == 'split' else ' beside '}{learners} learner(s)) and the "
                f"cluster has {gpus}: fewer rollout.replicas or learners, or more GPUs"
                + ("; or placement.mode: colocate" if mode == "split" else "")))  # fmt: skip
    sync = {"cpu": "object_store", "colocate": "cuda_ipc", "split": "nccl"}[mode]
    if engine != "vllm" and sync != "object_store":
        sync = "object_store"
        notes.append("the hf engine loads weights from the object store")

    actors = _place(mode, cluster, replicas, tp, learners, r.gpu_memory_utilization, problems)
    model: dict[str, Any] = {"params": None, "trainable_params": None}
    per_gpu: list[dict[str, Any]] = []
    if shape is not None and not problems:
        shard_mode = str(sharding or getattr(a, "sharding", "none"))
        per_gpu = _memory(
            spec, shape, cluster, mode, engine, actors, learners, problems, model, shard_mode
        )
    elif shape is None:
        notes.append(f"model {spec.model.path!r}: shape unknown here, memory not estimated")
    return Plan(
        mode=mode,
        engine=engine,
        sync=sync,
        num_learners=learners,
        tensor_parallel_size=tp,
        cluster={"source": cluster.source, "nodes": [asdict(n) for n in cluster.nodes]},
        actors=actors,
        gpus=per_gpu,
        model=model,
        problems=problems,
        notes=notes,
        engines_in_driver=in_driver,
        engine_thread=in_driver and not learner_draws_random(spec),
    )


def learner_draws_random(spec: Any) -> bool:
    """Whether the learner draws from torch's global RNG during a step (LoRA dropout; the
    models' own dropout is off in training, rlvr.models.causal_lm). An engine on a thread in
    the same process seeds that RNG per call (and restores it after), so it must not work
    while such a learner does."""
    lora = spec.model.lora
    return lora is not None and lora.dropout > 0


def _engines_in_driver(spec: Any, learners: int, problems: list[dict[str, Any]]) -> bool:
    """On CPUs, whether the engine runs in the driver's process. ``colocate`` asks for it,
    ``split`` for engine actors; ``auto`` takes the driver when there is one engine and the
    learner is the driver too: one process instead of two, ~0.5 GB and seconds of start less,
    and no Ray cluster at all (docs/benchmarks.md). The engine then works on a thread of its
    own, beside the learner (``Plan.engine_thread``: evals, and an asynchronous run's
    rollouts, overlap learning), unless the learner draws random numbers (LoRA dropout): the
    two threads would share torch's global RNG, which the engine seeds per call, and neither
    side would be reproducible. Such a synchronous run keeps the engine in the driver,
    working between steps; an asynchronous one gets an engine actor."""
    r, mode = spec.rollout, spec.placement.mode
    if mode == "split":
        return False
    possible = r.replicas == 1 and learners == 0
    if mode == "colocate" and not possible:
        problems.append(_problem(("placement", "mode"),
            "colocate on CPUs runs the engine in the driver beside the learner: it needs "
            f"rollout.replicas: 1 (got {r.replicas}) and algorithm.num_learners: 0 (got "
            f"{learners}); or placement.mode: split (engine actors)"))  # fmt: skip
        return False
    if possible and spec.algorithm.max_staleness > 0 and learner_draws_random(spec):
        if mode == "colocate":
            problems.append(_problem(("placement", "mode"),
                "an asynchronous run's engine in the driver samples beside a learner that "
                f"draws LoRA dropout ({spec.model.lora.dropout}) from the same torch RNG: set "
                "model.lora.dropout: 0, or placement.mode: split (an engine actor)"))  # fmt: skip
        return False
    return possible


def _place(
    mode: str,
    cluster: Cluster,
    replicas: int,
    tp: int,
    learners: int,
    engine_share: float,
    problems: list[dict[str, Any]],
) -> list[Actor]:
    """Actors onto GPUs: each engine on ``tp`` GPUs of one node; learners on the GPUs left
    (split) or on the first GPUs, beside the engines (colocate)."""
    actors = [Actor(f"engine-{i}", "engine", 0, [], 0.0) for i in range(replicas)]
    if mode == "cpu" or problems:
        if learners == 0:  # num_learners: 0 on CPU: the learner lives in the driver's process
            return [*actors, Actor("learner-driver", "learner", 0, [], 0.0)]
        return actors + [Actor(f"learner-{i}", "learner", 0, [], 0.0) for i in range(learners)]
    free = [list(range(n.gpus)) for n in cluster.nodes]
    actors = []
    for i in range(replicas):
        node = next((n for n, f in enumerate(free) if len(f) >= tp), None)
        if node is None:
            problems.append(_problem(("rollout", "tensor_parallel_size"),
                f"engine {i} needs {tp} GPUs on one node and no node has that many free: a "
                "smaller tensor_parallel_size or fewer replicas"))  # fmt: skip
            return actors
        taken, free[node] = free[node][:tp], free[node][tp:]
        actors.append(Actor(f"engine-{i}", "engine", node, taken, 1.0))
    if mode == "split":
        slots = [(n, g) for n, f in enumerate(free) for g in f]
    else:
        slots = [(n, g) for n, node in enumerate(cluster.nodes) for g in range(node.gpus)]
    shared = {(e.node, g) for e in actors for g in e.gpus}
    for i, (node, g) in enumerate(slots[:learners]):
        share = 1.0
        if (node, g) in shared:
            share = round(1.0 - engine_share, 3)
        actors.append(Actor(f"learner-{i}", "learner", node, [g], share))
    if mode == "colocate":
        on_learner_gpus = {(x.node, x.gpus[0]) for x in actors if x.role == "learner"}
        for e in actors:
            if e.role == "engine" and any((e.node, g) in on_learner_gpus for g in e.gpus):
                e.gpu_share = engine_share
    return actors


def _memory(
    spec: Any,
    shape: ModelShape,
    cluster: Cluster,
    mode: str,
    engine: str,
    actors: list[Actor],
    learners: int,
    problems: list[dict[str, Any]],
    model: dict[str, Any],
    sharding: str,
) -> list[dict[str, Any]]:
    """Fill each actor's memory estimate and each GPU's total; add a problem per overflow."""
    a, r, lora = spec.algorithm, spec.rollout, spec.model.lora
    lora_params = None
    if lora is not None:
        try:
            lora_params = lora_param_count(shape, lora.rank, lora.target_modules)
        except ValueError as exc:
            problems.append(_problem(("model", "lora", "target_modules"), str(exc)))
            return []
    model["params"] = param_count(shape)
    model["trainable_params"] = lora_params if lora_params is not None else model["params"]
    on_gpu = mode != "cpu"
    tokens = _micro_batch_tokens(spec, learners)
    lm = learner_memory(
        shape,
        micro_batch_tokens=tokens,
        lora_params=lora_params,
        gradient_checkpointing=spec.model.gradient_checkpointing,
        bf16=on_gpu and spec.model.dtype != "float32",
        kl_reference=a.kl_coef > 0,
        shards=learners if sharding == "fsdp" else 1,
    )
    seq = spec.data.max_prompt_tokens + r.max_new_tokens
    per_gpu: dict[tuple[int, int], dict[str, Any]] = {}
    for actor in actors:
        if actor.role == "learner":
            actor.memory_bytes = lm.to_dict()
        elif engine == "vllm" and actor.gpus:
            node = cluster.nodes[actor.node]
            em = engine_memory(
                shape,
                gpu_memory_bytes=node.gpu_memory_bytes,
                gpu_memory_utilization=r.gpu_memory_utilization,
                max_seq_tokens=seq,
                tensor_parallel=r.tensor_parallel_size,
            )
            actor.memory_bytes = em.to_dict()
            if em.kv_tokens < seq:
                problems.append(_problem(("rollout", "gpu_memory_utilization"),
                    f"{actor.name}: {r.gpu_memory_utilization} of a {_gb(node.gpu_memory_bytes)} "
                    f"GPU is {_gb(em.budget)}; weights {_gb(em.weights)} + vLLM overhead "
                    f"{_gb(em.overhead)} leave KV cache for {em.kv_tokens} tokens, less than "
                    f"one sequence ({seq} = data.max_prompt_tokens + rollout.max_new_tokens): "
                    "raise gpu_memory_utilization or rollout.tensor_parallel_size, shorten "
                    "the sequences, or use larger GPUs"))  # fmt: skip
        else:  # an HF engine: its weights in the compute dtype
            actor.memory_bytes = {"weights": (2 if on_gpu else 4) * model["params"]}
            actor.memory_bytes["total"] = actor.memory_bytes["weights"]
        for g in actor.gpus:
            slot = per_gpu.setdefault(
                (actor.node, g),
                {"node": actor.node, "gpu": g, "actors": [], "used_bytes": 0,
                 "capacity_bytes": cluster.nodes[actor.node].gpu_memory_bytes},
            )  # fmt: skip
            slot["actors"].append(actor.name)
            slot["used_bytes"] += actor.memory_bytes["total"]
    for learner in (x for x in actors if x.role == "learner" and x.gpus):
        cap = int(cluster.nodes[learner.node].gpu_memory_bytes * learner.gpu_share)
        if lm.total > cap:
            problems.append(_learner_problem(spec, lm.to_dict(), cap, learner, mode))
            break
    return [per_gpu[k] for k in sorted(per_gpu)]


def _learner_problem(
    spec: Any, m: dict[str, int], cap: int, learner: Actor, mode: str
) -> dict[str, Any]:
    """The field to change first: LoRA when the state alone is too big, else the micro-batch."""
    state = m["weights"] + m["gradients"] + m["optimizer"] + m["reference"]
    share = f" ({learner.gpu_share:.0%} of its GPU beside the engine)" if mode == "colocate" else ""
    what = (
        f"the learner needs {_gb(m['total'])} per GPU (weights {_gb(m['weights'])}, gradients "
        f"{_gb(m['gradients'])}, optimizer {_gb(m['optimizer'])}, reference "
        f"{_gb(m['reference'])}, activations {_gb(m['activations'])}) and has {_gb(cap)}{share}"
    )
    if state + m["overhead"] > cap:
        if spec.model.lora is None:
            return _problem(("model", "lora"), what + ": train LoRA adapters (model.lora), "
                            "use more or larger GPUs, or fewer replicas beside it")  # fmt: skip
        return _problem(("placement", "learner_gpus"), what + ": use larger GPUs or a "
                        "smaller model")  # fmt: skip
    field_name = "micro_batch_tokens" if spec.algorithm.micro_batch_tokens else "micro_batch_size"
    fix = "" if spec.model.gradient_checkpointing else ", or model.gradient_checkpointing: true"
    return _problem(("algorithm", field_name), what + f": a smaller algorithm.{field_name}" + fix)


def plan_summary(plan: Plan) -> str:
    """A few lines for people: the layout and each actor's node, GPUs, share and memory."""
    lines = [
        f"layout {plan.mode}: engine {plan.engine}, {plan.num_learners} learner actor(s), "
        f"weight sync {plan.sync}; cluster ({plan.cluster['source']}): "
        + ", ".join(
            f"node {i}: {n['gpus']} GPU x {n['gpu_memory_bytes'] / 1e9:.0f} GB"
            for i, n in enumerate(plan.cluster["nodes"])
        )
    ]
    if plan.model["params"]:
        lines.append(
            f"model: {plan.model['params'] / 1e6:,.1f}M parameters, "
            f"{plan.model['trainable_params'] / 1e6:,.1f}M trainable"
        )
    for x in plan.actors:
        where = (
            f"node {x.node} GPU {','.join(map(str, x.gpus))} share {x.gpu_share:g}"
            if x.gpus
            else "CPU"
        )
        mem = x.memory_bytes
        parts = ", ".join(
            f"{k} {v}" if k.endswith("tokens") else f"{k} {_gb(v)}"
            for k, v in mem.items()
            if k not in ("total", "budget") and v
        )
        total = f": {_gb(mem['total'])} ({parts})" if mem else ""
        lines.append(f"  {x.name:<10} {where}{total}")
    for g in plan.gpus:
        pct = g["used_bytes"] / max(g["capacity_bytes"], 1)
        lines.append(
            f"  node {g['node']} GPU {g['gpu']}: {_gb(g['used_bytes'])} of "
            f"{_gb(g['capacity_bytes'])} ({pct:.0%}) - {', '.join(g['actors'])}"
        )
    lines += [f"note: {n}" for n in plan.notes]
    lines += [f"does not fit: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in plan.problems]
    return "\n".join(lines)
