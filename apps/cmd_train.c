/* memfold train: the training loop of train/trainer.h from the command line; under mpirun one
 * process per rank (data parallel, rank 0 writes the run directory). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli.h"
#include "apps/commands.h"
#include "train/allreduce.h"
#include "train/trainer.h"

static void train_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold train --data FILE.h5 -o RUN/ [--val FILE.h5]\n"
        "                     [--config tiny|af2-initial|af2-finetune|FILE.json] [--set K=V ...]\n"
        "                     [--steps N] [--checkpoint-every K] [--keep N] [--resume]\n"
        "                     [--seed S] [--init PARAMS] [--structure-layers N] [--batch B]\n"
        "                     [--micro-batches M] [--val-every K] [--no-dropout]\n"
        "                     [--no-prefetch] [--arena-gib G] [--progress-every N]\n"
        "                     [--chunk auto --mem-budget G] [--device cpu|cuda [--gpu-arena-gib "
        "G]]\n"
        "\n"
        "AlphaFold 2 training (suppl. 1.11): per example a random crop and MSA\n"
        "sample (the data loader), a recycling count drawn uniformly in 1..num_recycle+1 with\n"
        "the gradient through the last iteration, AF2 dropout, the AF2 loss; per-example\n"
        "gradient clipping, the mean over examples and ranks, Adam with warm-up and decay, EMA.\n"
        "  --data FILE.h5        raw feature file with structures ('memfold featurize')\n"
        "  --val FILE.h5         validation chains (raw feature file): inference with the EMA\n"
        "                        weights on each whole chain, lDDT-Ca against its structure\n"
        "  -o, --out RUN/        run directory: config.json, log.jsonl, log.csv,\n"
        "                        ckpt-<step>.h5, and params.h5 (EMA weights) at the end\n"
        "  --config C            preset or JSON file (default tiny; with --init: inferred\n"
        "                        from the parameter shapes); memory.* keys set the memory\n"
        "                        policy (e.g. --set memory.recompute=block --set memory.chunk=16)\n"
        "  --set K=V             configuration override, repeatable ('memfold config keys')\n"
        "  --steps N             total steps of the run (default 100); a resumed run stops at\n"
        "                        the same step\n"
        "  --checkpoint-every K  checkpoint every K steps (default: at the end only); always\n"
        "                        one at the end and on SIGINT/SIGTERM\n"
        "  --keep N              checkpoints kept (default 3; 0 keeps all)\n"
        "  --resume              continue from the newest valid checkpoint of RUN/ (damaged\n"
        "                        ones are skipped with the reason); reproduces the\n"
        "                        uninterrupted run's log bit for bit on the CPU\n"
        "  --seed S              initial parameters, sample order and dropout (default 0)\n"
        "  --init PARAMS         initial parameters (.npz or memfold HDF5) instead of AF2's\n"
        "                        random initialisation\n"
        "  --structure-layers N  structure-module layers (AF2: 8)\n"
        "  --batch B             examples per rank per micro-batch (default:\n"
        "                        optimizer.batch_size / (ranks x micro-batches), at least 1)\n"
        "  --micro-batches M     micro-batches accumulated per step (default 1)\n"
        "  --val-every K         validate every K steps (default: at the end)\n"
        "  --no-dropout          train without dropout\n"
        "  --no-prefetch         build each step's samples when needed (default: the next\n"
        "                        step's samples are built on a thread during the step)\n"
        "  --arena-gib G         activation arena reservation (default: physical memory)\n"
        "  --device cuda         the trunk's forward and backward on the GPU (its parameters\n"
        "                        mirrored there after every optimizer step); the structure\n"
        "                        module, heads, losses and optimizer on the host; with\n"
        "                        --set memory.offload=true the GPU keeps no checkpoint\n"
        "  --gpu-arena-gib G     GPU arena reservation (default: 90%% of the free GPU memory)\n"
        "  --chunk auto --mem-budget G  per module, the largest chunk that keeps the memory\n"
        "                        model's predicted total for the largest sample of --data\n"
        "                        (memfold memplan --mode train) within G GiB; printed\n"
        "  --progress-every N    progress line every N steps when stderr is not a terminal\n"
        "                        (default 10)\n"
        "  --inject-nan-step N   testing: make the gradient of step N non-finite (the step is\n"
        "                        skipped, counted and logged)\n"
        "Under mpirun each rank runs this command; gradients are averaged with MPI. Exit\n"
        "status: 0 done, 1 error, 2 usage, 128 + signal when stopped by SIGINT/SIGTERM (after\n"
        "writing a checkpoint).\n");
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "memfold train: %s%s%s\n", what, arg ? " " : "", arg ? arg : "");
    train_usage(stderr);
    return 2;
}

/* 0: parsed; -1: --help printed; else the exit code of a usage error. */
static int parse_args(int argc, char **argv, mf_trainer_options *o, bool *cuda, double *gpu_gib)
{
    *o = mf_trainer_default_options();
    o->arena_bytes = mf_cli_physical_memory();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--resume")) {
            o->resume = true;
            continue;
        }
        if (!strcmp(a, "--no-dropout")) {
            o->dropout = false;
            continue;
        }
        if (!strcmp(a, "--no-prefetch")) {
            o->prefetch = false;
            continue;
        }
        if (i + 1 >= argc) return usage_error("missing value after", a);
        const char *v = argv[++i];
        int64_t n;
        if (!strcmp(a, "--data")) {
            o->data_path = v;
        } else if (!strcmp(a, "--val")) {
            o->val_path = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            o->run_dir = v;
        } else if (!strcmp(a, "--config")) {
            o->config = v;
        } else if (!strcmp(a, "--set")) {
            if (o->n_sets == MF_TRAINER_MAX_SETS) return usage_error("too many --set", NULL);
            o->sets[o->n_sets++] = v;
        } else if (!strcmp(a, "--init")) {
            o->init_params = v;
        } else if (!strcmp(a, "--steps")) {
            if (!mf_cli_parse_i64(v, 1, &o->total_steps))
                return usage_error("--steps: expected N >= 1", v);
        } else if (!strcmp(a, "--checkpoint-every")) {
            if (!mf_cli_parse_i64(v, 0, &o->checkpoint_every))
                return usage_error("--checkpoint-every: expected K >= 0", v);
        } else if (!strcmp(a, "--keep")) {
            if (!mf_cli_parse_i64(v, 0, &n) || n > 1000000)
                return usage_error("--keep: expected N >= 0", v);
            o->keep = (int)n;
        } else if (!strcmp(a, "--seed")) {
            if (!mf_cli_parse_i64(v, 0, &n)) return usage_error("--seed: expected S >= 0", v);
            o->seed = (uint64_t)n;
            o->seed_set = true;
        } else if (!strcmp(a, "--structure-layers")) {
            if (!mf_cli_parse_i64(v, 1, &o->structure_layers))
                return usage_error("--structure-layers: expected N >= 1", v);
        } else if (!strcmp(a, "--batch")) {
            if (!mf_cli_parse_i64(v, 1, &o->batch))
                return usage_error("--batch: expected B >= 1", v);
        } else if (!strcmp(a, "--micro-batches")) {
            if (!mf_cli_parse_i64(v, 1, &o->micro_batches))
                return usage_error("--micro-batches: expected M >= 1", v);
        } else if (!strcmp(a, "--val-every")) {
            if (!mf_cli_parse_i64(v, 1, &o->val_every))
                return usage_error("--val-every: expected K >= 1", v);
        } else if (!strcmp(a, "--progress-every")) {
            if (!mf_cli_parse_i64(v, 0, &o->progress_every))
                return usage_error("--progress-every: expected N >= 0", v);
        } else if (!strcmp(a, "--inject-nan-step")) {
            if (!mf_cli_parse_i64(v, 1, &o->inject_nan_step))
                return usage_error("--inject-nan-step: expected N >= 1", v);
        } else if (!strcmp(a, "--chunk")) {
            if (strcmp(v, "auto"))
                return usage_error("--chunk: only auto here (set a size with --set memory.chunk=N)",
                                   v);
            o->chunk_auto = true;
        } else if (!strcmp(a, "--mem-budget")) {
            char *end;
            o->mem_budget_gib = strtod(v, &end);
            if (*end || !(o->mem_budget_gib > 0))
                return usage_error("--mem-budget: expected GiB", v);
        } else if (!strcmp(a, "--arena-gib")) {
            char *end;
            const double g = strtod(v, &end);
            if (*end || !(g > 0)) return usage_error("--arena-gib: expected GiB", v);
            o->arena_bytes = mf_cli_gib_bytes(g);
        } else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda"))
                return usage_error("--device: expected cpu or cuda", v);
            *cuda = !strcmp(v, "cuda");
        } else if (!strcmp(a, "--gpu-arena-gib")) {
            char *end;
            *gpu_gib = strtod(v, &end);
            if (*end || !(*gpu_gib > 0)) return usage_error("--gpu-arena-gib: expected GiB", v);
        } else {
            return usage_error("unknown option", a);
        }
    }
    if (!o->data_path) return usage_error("--data is required", NULL);
    if (o->chunk_auto != (o->mem_budget_gib > 0))
        return usage_error("--chunk auto and --mem-budget G go together", NULL);
    if (!o->run_dir) return usage_error("-o RUN/ is required", NULL);
    if (*gpu_gib > 0 && !*cuda) return usage_error("--gpu-arena-gib needs --device cuda", NULL);
    return 0;
}

int mf_cmd_train(int argc, char **argv)
{
    mf_trainer_options o;
    bool cuda = false;
    double gpu_gib = 0;
    int rc = parse_args(argc, argv, &o, &cuda, &gpu_gib);
    if (rc < 0) return 0;
    if (rc > 0) return rc;
    mf_dist dist;
    if (mf_dist_init(&dist, NULL, NULL, false) != MF_OK) return mf_report_error("train");
    mf_arena garena;
    mf_ctx gctx;
    if (cuda) {
        /* under mpirun each rank takes its own GPU of the node; the trainer sets the policy */
        const mf_policy pol = mf_policy_default();
        if ((dist.size > 1 && mf_cuda_select_local_device(dist.rank, NULL) != MF_OK) ||
            mf_cli_gpu_context(gpu_gib, &pol, &garena, &gctx) != MF_OK) {
            mf_report_error("train");
            mf_dist_finalize(&dist);
            return 1;
        }
        o.trunk_ctx = &gctx;
    }
    mf_trainer_result res;
    const mf_status st = mf_trainer_run(&o, &dist, &res);
    if (cuda) {
        mf_ctx_destroy(&gctx);
        mf_arena_destroy(&garena);
    }
    if (st != MF_OK) {
        if (dist.size > 1) fprintf(stderr, "[rank %d] ", dist.rank);
        mf_report_error("train");
        /* a rank that fails cannot join the others' next collective: end them all */
        if (dist.use_mpi && dist.size > 1) MPI_Abort(dist.comm, 1);
        mf_dist_finalize(&dist);
        return 1;
    }
    if (mf_dist_finalize(&dist) != MF_OK) return mf_report_error("train");
    return res.signal ? 128 + res.signal : 0;
}
