/* A strict mmCIF reader, sufficient for PDB entries. Two layers: the CIF syntax (first data block
 * only: name-value pairs and loops of values; single- and double-quoted strings, where a quote
 * closes only before white space so "O5'" and 'N,N'-DIMETHYL' read whole; ';' text fields; '.' and
 * '?' as null/unknown), and the reading of protein chains from it as AlphaFold 2's
 * mmcif_parsing does. Malformed input is MF_ERR_FORMAT with "file:line: field: what", and on any
 * failure the caller gets nothing allocated. */
#ifndef MF_DATA_MMCIF_H
#define MF_DATA_MMCIF_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "protein/protein.h"

/* ---- CIF syntax ---- */

typedef enum {
    MF_CIF_VALUE = 0, /* a bare, quoted or text-field value */
    MF_CIF_NULL,      /* '.' (bare): not applicable */
    MF_CIF_UNKNOWN,   /* '?' (bare): unknown */
} mf_cif_kind;

typedef struct {
    const char *s; /* NUL-terminated; "." or "?" for the null kinds */
    int32_t line;  /* line where the value starts */
    int32_t kind;  /* mf_cif_kind */
} mf_cif_value;

typedef struct mf_cif mf_cif;

/* Parses text (len bytes, need not be NUL-terminated); name is used in messages. */
mf_status mf_cif_parse(mf_cif **out, const char *text, size_t len, const char *name);
void mf_cif_free(mf_cif *cif);
const char *mf_cif_block_name(const mf_cif *cif);
const char *mf_cif_file_name(const mf_cif *cif);

/* A category ("_atom_site", case-insensitive): its rows and items. NULL when absent. */
typedef struct mf_cif_table mf_cif_table;
const mf_cif_table *mf_cif_find(const mf_cif *cif, const char *category);
int64_t mf_cif_rows(const mf_cif_table *t);
int32_t mf_cif_table_line(const mf_cif_table *t);
/* Column of an item ("Cartn_x", case-insensitive), -1 when absent. */
int mf_cif_column(const mf_cif_table *t, const char *item);
/* The value at (row, col); both must be in range (checked: an out-of-range access returns a
 * static unknown value). */
const mf_cif_value *mf_cif_get(const mf_cif_table *t, int64_t row, int col);

/* ---- protein chains ---- */

/* One mf_protein per author chain (auth_asym_id) of a protein polymer entity, in the order of
 * _pdbx_poly_seq_scheme (else of the atoms). The sequence is the entity's full sequence
 * (_pdbx_poly_seq_scheme, else _entity_poly_seq; with neither, the observed residues): residues
 * without atoms in the first model have a zero mask. Residue numbers and insertion codes are the
 * author's. The caller frees *chains with mf_protein_list_free. */
mf_status mf_mmcif_parse(const char *text, size_t len, const char *name, mf_protein **chains,
                         int *n_chains);
mf_status mf_mmcif_read(const char *path, mf_protein **chains, int *n_chains);

/* Entry facts as AlphaFold 2 reads them: resolution from _refine.ls_d_res_high, else
 * _em_3d_reconstruction.resolution, else _reflns.d_resolution_high; release date the earliest
 * _pdbx_audit_revision_history.revision_date; method the _exptl.method values. */
mf_status mf_mmcif_entry_info(const mf_cif *cif, mf_entry_info *info);

#endif
