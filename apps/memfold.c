/* The memfold command: argument parsing and subcommand dispatch, nothing else. */
#include <stdio.h>
#include <string.h>

#include "apps/commands.h"

static const mf_command commands[] = {
    {"ablate", "memory-policy ablation: train + predict per policy, memory and accuracy, report",
     mf_cmd_ablate},
    {"bench", "benchmarks: time and peak memory of ops and blocks", mf_cmd_bench},
    {"config", "list presets, print or write a configuration", mf_cmd_config},
    {"eval", "compare a predicted structure with a reference: lDDT-Ca, lDDT, TM-score, GDT, RMSD",
     mf_cmd_eval},
    {"featurize", "structures + MSAs + template hits -> AlphaFold 2 feature file (HDF5)",
     mf_cmd_featurize},
    {"inspect", "summarize any HDF5 file memfold writes", mf_cmd_inspect},
    {"memplan", "memory model: predicted peak memory of a run, largest N_res within a budget",
     mf_cmd_memplan},
    {"predict", "predict structures from FASTA (+ MSAs, templates) or a processed-feature file",
     mf_cmd_predict},
    {"train", "train on a feature file: checkpoints, exact resume, MPI data parallel",
     mf_cmd_train},
    {"train-step", "one deterministic training step on a processed-feature file: losses, gradients",
     mf_cmd_train_step},
    {"verify", "check modules against reference vectors (shared/testvectors/modules)",
     mf_cmd_verify},
    {"version", "print the version and build configuration", mf_cmd_version},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: memfold <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'memfold <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return mf_cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "memfold: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
