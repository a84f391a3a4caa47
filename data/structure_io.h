/* Reading structure files: the format follows the extension (.cif/.mmcif or .pdb/.ent, each
 * possibly .gz), the result is one mf_protein per author chain with a protein polymer. The second
 * half of this header is shared by the mmCIF and PDB readers (the atom record and the rule that
 * turns one residue's records into atom37). */
#ifndef MF_DATA_STRUCTURE_IO_H
#define MF_DATA_STRUCTURE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "protein/protein.h"

typedef enum {
    MF_STRUCTURE_UNKNOWN = 0,
    MF_STRUCTURE_MMCIF,
    MF_STRUCTURE_PDB,
} mf_structure_format;

/* From the file name: ".cif", ".mmcif", ".pdb", ".ent", each optionally followed by ".gz"
 * (case-insensitive). MF_STRUCTURE_UNKNOWN for anything else. */
mf_structure_format mf_structure_format_from_path(const char *path);

/* Reads a whole file into a NUL-terminated buffer (gzip-compressed or plain: zlib's gzread reads
 * both). Fails with MF_ERR_IO when it cannot be read and MF_ERR_FORMAT when it holds a NUL byte
 * (text formats only) or is a truncated gzip stream. *text is the caller's to free(). */
mf_status mf_read_text_file(const char *path, char **text, size_t *len);

/* All protein chains of the file, in file order; *chains is an array of *n_chains records that
 * the caller frees with mf_protein_list_free. On failure *chains is NULL and *n_chains 0. */
mf_status mf_structure_read(const char *path, mf_protein **chains, int *n_chains);

/* One chain by author chain id (for PDB files, "A" also finds a blank chain id). */
mf_status mf_structure_read_chain(const char *path, const char *chain_id, mf_protein *out);

/* Author chain ids and residue counts (full sequence) of the protein chains in the file. */
typedef struct {
    char chain_id[MF_CHAIN_ID_MAX];
    int64_t num_res;      /* residues in the sequence (SEQRES where the file has one) */
    int64_t num_observed; /* residues with at least one atom */
} mf_chain_summary;
mf_status mf_structure_list_chains(const char *path, mf_chain_summary **chains, int *n_chains);

/* ---- shared by data/mmcif.c and data/pdb.c ---- */

/* One ATOM/HETATM record of a polymer residue. */
typedef struct {
    int32_t line;     /* line in the file, for messages */
    int16_t atom37;   /* atom37 slot (SE of MSE -> SD), -1 for atoms outside atom37 (H, ...) */
    char alt;         /* alternate location id, ' ' for none */
    char ins;         /* insertion code, ' ' for none */
    char res_name[6]; /* residue name as written (up to 5 characters) */
    int32_t auth_seq; /* author residue number */
    float xyz[3];
    float occupancy;
    float b_factor;
} mf_atom_record;

/* atom37 slot of atom `atom_name` in residue `res_name` (SE of MSE reads as SD of MET). */
int mf_atom_record_slot(const char *res_name, const char *atom_name);

/* Fills residue i of p from the records of one residue. Alternate locations are resolved per
 * residue: the alt id whose atoms have the highest occupancy wins (ties: the first in file
 * order) and is used with the atoms that have no alt id; an atom37 slot that only the other alt
 * ids provide takes their highest-occupancy record, so no observed atom is dropped. When
 * res_name is not NULL, only records of that residue name count (microheterogeneity: the
 * sequence names the residue). The first record of a slot wins over later duplicates. Returns
 * the index of the record whose name the residue takes (-1 when no record counted). */
int mf_resolve_residue(mf_protein *p, int64_t i, const mf_atom_record *recs, int64_t n,
                       const char *res_name);

/* Strict number parsing of a field (surrounding blanks allowed, nothing else): finite doubles
 * and integers that fit int32. Return 0 on success. */
int mf_parse_finite(const char *s, size_t len, double *out);
int mf_parse_int32(const char *s, size_t len, int32_t *out);

/* Appends the entry's facts to every chain. */
void mf_set_entry_info(mf_protein *chains, int n, const mf_entry_info *info);

#endif
