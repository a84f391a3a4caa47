/* Writing predicted structures as mmCIF (PDBx/ModelCIF), following AlphaFold 2's
 * common/protein.to_mmcif and common/mmcif_metadata.py where that is sound:
 *
 *   data_<entry id>, _entry, _struct (title: model name, rank, ranking confidence, parents),
 *   _audit_conform (ModelCIF dictionary), _software and _ma_software_group,
 *   _entity, _entity_poly, _entity_poly_seq (chains with identical sequences share an entity;
 *     AF2 gives every chain its own), _struct_asym (label ids A, B, ..., Z, AA, BA, ... as AF2),
 *   _pdbx_poly_seq_scheme (every residue of the full sequence with its author number, so
 *     residues without atoms keep their place; AF2 writes no scheme),
 *   _chem_comp (the residue types present), _atom_type,
 *   _atom_site (group_PDB id type_symbol label_atom_id label_alt_id label_comp_id label_asym_id
 *     label_entity_id label_seq_id pdbx_PDB_ins_code Cartn_x Cartn_y Cartn_z occupancy
 *     B_iso_or_equiv auth_seq_id auth_comp_id auth_asym_id auth_atom_id pdbx_PDB_model_num),
 *   ModelCIF model description: _ma_data, _ma_target_entity, _ma_target_entity_instance,
 *     _ma_model_list, and with a pLDDT: _ma_qa_metric (1 global, 2 local pLDDT),
 *     _ma_qa_metric_global (mean per-residue pLDDT) and _ma_qa_metric_local (one row per residue
 *     with atoms, as the AlphaFold DB files have; AF2's to_mmcif declares the local metric but
 *     writes no rows).
 *
 * label_seq_id is the residue's position in the chain's sequence (1-based), auth_seq_id its
 * residue_index; AF2 writes residue_index in both. B_iso_or_equiv is the per-residue pLDDT when
 * one is given, else the record's B-factors. Coordinates %.3f, B %.2f, occupancy 1.00. The
 * chains are checked by mf_structure_check_writable (mmCIF rules: any chain id up to 7
 * characters) and written atomically (mf_write_file_atomic). */
#ifndef MF_PROTEIN_MMCIF_WRITER_H
#define MF_PROTEIN_MMCIF_WRITER_H

#include <stddef.h>

#include "core/status.h"
#include "protein/pdb_writer.h"
#include "protein/protein.h"

/* AF2's reverse-spreadsheet label_asym_id of chain ordinal n >= 1: 1 -> "A", 26 -> "Z",
 * 27 -> "AA", 28 -> "BA". out needs 8 bytes (enough for n < 26^7). */
void mf_mmcif_label_asym_id(int n, char out[8]);

/* The mmCIF text; *text is malloc'ed and NUL-terminated, *len its length (len may be NULL).
 * plddt as for mf_pdb_format. */
mf_status mf_mmcif_format(const mf_protein *chains, int n_chains, const float *const *plddt,
                          const mf_structure_meta *meta, char **text, size_t *len);
mf_status mf_mmcif_write(const char *path, const mf_protein *chains, int n_chains,
                         const float *const *plddt, const mf_structure_meta *meta);

#endif
