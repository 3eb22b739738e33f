"""Schemas of the spec's ``train`` and ``sample`` sections (with every default)."""

from __future__ import annotations

from flowspec.registry import params_schema, ref

_num = {"type": "number"}
_pos_int = {"type": "integer", "minimum": 1}

OPTIMIZER_SCHEMA = {
    "description": "optimizer: adam | adamw | sgd, as a name or {name: {lr, ...}}",
    "oneOf": [
        {"type": "string", "enum": ["adam", "adamw", "sgd"]},
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                name: params_schema(
                    lr={"type": "number", "exclusiveMinimum": 0, "default": 1e-3},
                    betas={"type": "array", "items": _num, "minItems": 2, "maxItems": 2},
                    eps={"type": "number", "exclusiveMinimum": 0},
                    weight_decay={"type": "number", "minimum": 0, "default": 0.0},
                    momentum={"type": "number", "minimum": 0},
                )
                for name in ("adam", "adamw", "sgd")
            },
            "additionalProperties": False,
        },
    ],
}

TRAIN_SCHEMA = params_schema(
    objective={**ref("objective"), "default": "maximum_likelihood",
               "description": "what training minimises: a registered objective "
                              "(maximum_likelihood on data, reverse_kl on an energy target; "
                              "`flowspec nodes` lists them), as a name or {name: {params}}"},
    target={**ref("energy"), "description": "energy for reverse_kl, e.g. U1 or {U1: {...}}"},
    anneal={**params_schema(
        beta0={"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.01},
        steps={"type": "integer", "minimum": 0, "default": 0,
               "description": "anneal over this many steps (a fixed count: a shorter run "
                              "ends still annealing, and says so)"},
        fraction={"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1,
                  "default": None,
                  "description": "anneal over this share of the run's steps (follows "
                                 "--set train.steps); use instead of steps"},
    ), "description": "reverse_kl: β rises linearly from beta0 to 1 over steps (or fraction "
                      "of the run)"},
    batch_size={**_pos_int, "default": 128},
    epochs={**_pos_int, "default": 10,
            "description": "passes over the data (ignored if steps set)"},
    steps={"type": ["integer", "null"], "minimum": 1, "default": None,
           "description": "total optimisation steps; overrides epochs"},
    optimizer={**OPTIMIZER_SCHEMA, "default": {"adam": {"lr": 1e-3}}},
    warmup_steps={"type": "integer", "minimum": 0, "default": 0,
                  "description": "linear learning-rate warm-up from 0"},
    schedule={"enum": ["constant", "cosine"], "default": "constant"},
    grad_clip={"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
               "description": "clip the global gradient norm to this value"},
    ema={"type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 1, "default": None,
         "description": "decay of an exponential moving average of weights used for eval"},
    eval_every={"type": "integer", "minimum": 0, "default": 1,
                "description": "evaluate on the validation split (test without one) every N "
                               "epochs (0: never)"},
    early_stopping={**params_schema(
        required=("patience",),
        patience={**_pos_int, "description": "stop after this many evaluations without "
                                             "improvement"},
        min_delta={"type": "number", "minimum": 0, "default": 0.0,
                   "description": "an improvement smaller than this does not count"},
    ), "description": "stop when the validation metric stops improving (needs "
                      "data.val_fraction > 0)"},
    log={"type": "array", "items": {"enum": ["jsonl", "csv", "tensorboard"]},
         "uniqueItems": True, "default": ["jsonl"],
         "description": "metric sinks: metrics.jsonl (always written), metrics/<split>.csv, "
                        "tensorboard/ (needs the tensorboard package)"},
    eval_batches={"type": ["integer", "null"], "minimum": 1, "default": None,
                  "description": "cap the periodic evaluation to N batches"},
    sample_every={"type": "integer", "minimum": 0, "default": 1,
                  "description": "save a sample grid every N epochs (0: never)"},
    log_every={"type": "integer", "minimum": 1, "default": 50},
    checkpoint_every={"type": "integer", "minimum": 0, "default": 0,
                      "description": "also checkpoint every N steps (0: at epoch ends only)"},
    max_bad_steps={"type": "integer", "minimum": 1, "default": 20,
                   "description": "abort after this many consecutive non-finite losses"},
    steps_per_epoch={"type": ["integer", "null"], "minimum": 1, "default": None,
                     "description": "for reverse_kl (no dataset): steps counted as one epoch"},
    checkpoint_grads={"type": "boolean", "default": False,
                      "description": "recompute activations in backward to save memory"},
    memory={"enum": ["none", "checkpoint", "invertible"], "default": "none",
            "description": "what backward keeps: none (all activations), checkpoint "
            "(recompute each node), invertible (rebuild inputs by exact inverses: memory "
            "flat in depth; numerical inverses checkpointed, said aloud)"},
    precision={"enum": ["fp32", "bf16", "fp16"], "default": "fp32",
               "description": "fp32, or autocast: bf16 (CPU and CUDA) | fp16 (CUDA, with a "
               "gradient scaler); log-dets, splines and priors stay fp32"},
    compile={"type": "boolean", "default": False,
             "description": "torch.compile the training step (eager, with a message, where "
             "the platform cannot compile)"},
    amp={"type": ["boolean", "null"], "default": None,
         "description": "deprecated: use precision (amp: true is read as precision: bf16)"},
    channels_last={"type": "boolean", "default": False,
                   "description": "conv weights in channels_last layout: faster conv "
                   "conditioners on CPU (oneDNN); on CUDA the known win with bf16/fp16 "
                   "(tensor cores)"},
    seed={"type": "integer", "default": 0},
)

SAMPLE_SCHEMA = params_schema(
    n={**_pos_int, "default": 64},
    temperature={"type": "number", "minimum": 0, "default": 1.0},
    seed={"type": "integer", "default": 0},
    denoise={"type": "boolean",
             "description": "TarFlow's score-based denoising (absent: off): one step "
             "x + σ²∇log p(x) on each sample, σ being the training noise (train.objective: "
             "{maximum_likelihood: {noise: σ}})"},
)
