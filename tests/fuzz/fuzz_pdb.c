/* libFuzzer target: the legacy PDB reader. */
#include <stddef.h>
#include <stdint.h>

#include "data/pdb.h"
#include "protein/protein.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_protein *chains = NULL;
    int n = 0;
    if (mf_pdb_parse((const char *)data, size, "fuzz.pdb", &chains, &n) == MF_OK)
        mf_protein_list_free(chains, n);
    return 0;
}
