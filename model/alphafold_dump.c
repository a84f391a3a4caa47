/* Recording stage tensors of the forward pass and writing inference dumps in the layout of
 * shared/testvectors/expected_outputs.h5 (see alphafold.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/alphafold.h"

void mf_alphafold_recorder_init(mf_alphafold_recorder *r, int64_t num_iterations,
                                int64_t num_templates)
{
    memset(r, 0, sizeof *r);
    r->num_iterations = num_iterations;
    r->num_templates = num_templates;
}

void mf_alphafold_recorder_free(mf_alphafold_recorder *r)
{
    for (int i = 0; i < r->count; i++) mf_h5_array_free(&r->records[i].array);
    free(r->records);
    memset(r, 0, sizeof *r);
}

const mf_alphafold_record *mf_alphafold_recorder_find(const mf_alphafold_recorder *r,
                                                      const char *name)
{
    for (int i = 0; i < r->count; i++)
        if (!strcmp(r->records[i].name, name)) return &r->records[i];
    return NULL;
}

mf_status mf_alphafold_recorder_hook(void *data, const char *stage, const char *tensor,
                                     int64_t iteration, int64_t template_index,
                                     const mf_h5_array *value)
{
    mf_alphafold_recorder *r = data;
    MF_REQUIRE(value && value->dtype == MF_F32, "recorder: %s/%s must be f32", stage, tensor);
    char name[128];
    if ((size_t)snprintf(name, sizeof name, "intermediates/%s/%s", stage, tensor) >= sizeof name)
        return MF_ERROR(MF_ERR_INVALID, "recorder: name %s/%s too long", stage, tensor);
    /* leading axes: [R] per iteration, then [T] per template */
    int64_t lead[2], nlead = 0, index = 0;
    if (iteration >= 0) {
        MF_REQUIRE(iteration < r->num_iterations, "recorder: %s: iteration %lld of %lld", name,
                   (long long)iteration, (long long)r->num_iterations);
        lead[nlead++] = r->num_iterations;
        index = iteration;
    }
    if (template_index >= 0) {
        MF_REQUIRE(template_index < r->num_templates, "recorder: %s: template %lld of %lld", name,
                   (long long)template_index, (long long)r->num_templates);
        lead[nlead++] = r->num_templates;
        index = index * r->num_templates + template_index;
    }
    MF_REQUIRE(value->ndim + nlead <= MF_H5_MAX_DIMS, "recorder: %s: too many dims", name);
    const int64_t n = mf_h5_array_numel(value);
    mf_alphafold_record *rec = (mf_alphafold_record *)mf_alphafold_recorder_find(r, name);
    if (!rec) {
        if (r->count == r->cap) {
            int cap = r->cap ? 2 * r->cap : 64;
            mf_alphafold_record *grown = realloc(r->records, sizeof *grown * (size_t)cap);
            if (!grown) return MF_ERROR(MF_ERR_NOMEM, "recorder: %d records", cap);
            r->records = grown;
            r->cap = cap;
        }
        rec = &r->records[r->count];
        memset(rec, 0, sizeof *rec);
        snprintf(rec->name, sizeof rec->name, "%s", name);
        rec->array.dtype = MF_F32;
        rec->array.ndim = (int)nlead + value->ndim;
        int64_t total = n;
        for (int k = 0; k < nlead; k++) {
            rec->array.shape[k] = lead[k];
            total *= lead[k];
        }
        for (int k = 0; k < value->ndim; k++) rec->array.shape[nlead + k] = value->shape[k];
        rec->array.data = calloc((size_t)(total > 0 ? total : 1), sizeof(float));
        if (!rec->array.data) return MF_ERROR(MF_ERR_NOMEM, "recorder: %s", name);
        r->count++;
    }
    bool same = rec->array.ndim == (int)nlead + value->ndim;
    for (int k = 0; same && k < value->ndim; k++)
        same = rec->array.shape[nlead + k] == value->shape[k];
    MF_REQUIRE(same, "recorder: %s changed shape between calls", name);
    memcpy((float *)rec->array.data + index * n, value->data, sizeof(float) * (size_t)n);
    return MF_OK;
}

static mf_status write_tensor(mf_h5_writer *w, const char *name, const mf_tensor *t,
                              const char *doc)
{
    if (!t->data) return MF_OK;
    MF_REQUIRE(t->dtype == MF_F32 && t->device == MF_DEV_CPU, "dump %s: host f32 expected", name);
    MF_TRY(mf_h5_write_array(w, name, MF_F32, t->ndim, t->shape, t->data));
    return mf_h5_write_attr_string(w, name, "doc", doc);
}

static mf_status write_all(mf_h5_writer *w, const mf_alphafold_outputs *o,
                           const mf_alphafold_recorder *rec)
{
    MF_TRY(mf_h5_write_attr_string(w, ".", "format", "memfold-inference-dump"));
    MF_TRY(mf_h5_write_attr_int(w, ".", "schema_version", 1));
    MF_TRY(write_tensor(w, "final_atom_positions", &o->final_atom_positions,
                        "[N,37,3] atom37 positions (Angstrom) of the last iteration"));
    MF_TRY(write_tensor(w, "final_atom_mask", &o->final_atom_mask, "[N,37] atom37 existence mask"));
    MF_TRY(write_tensor(w, "plddt", &o->plddt, "[N] predicted lDDT-Ca (0..100)"));
    MF_TRY(write_tensor(w, "lddt_logits", &o->lddt_logits, "[N,bins] predicted lDDT head logits"));
    MF_TRY(write_tensor(w, "distogram_logits", &o->distogram_logits,
                        "[N,N,bins] distogram head logits"));
    MF_TRY(write_tensor(w, "masked_msa_logits", &o->masked_msa_logits,
                        "[N_seq,N,23] masked MSA head logits"));
    MF_TRY(write_tensor(w, "experimentally_resolved_logits", &o->experimentally_resolved_logits,
                        "[N,37] experimentally resolved head logits"));
    MF_TRY(write_tensor(w, "predicted_aligned_error_logits", &o->pae_logits,
                        "[N,N,bins] predicted aligned error head logits"));
    MF_TRY(write_tensor(w, "single", &o->single,
                        "[N,c_s] single representation (Evoformer output projection)"));
    MF_TRY(write_tensor(w, "pair", &o->pair, "[N,N,c_z] pair representation after the Evoformer"));
    MF_TRY(write_tensor(w, "msa", &o->msa_first_row,
                        "[N,c_m] first row of the MSA representation after the Evoformer "
                        "(recycled)"));
    MF_TRY(write_tensor(w, "sm/frames", &o->sm_frames,
                        "[L,N,7] backbone frames per layer: quaternion w,x,y,z + translation "
                        "(Angstrom)"));
    MF_TRY(write_tensor(w, "sm/positions", &o->sm_positions,
                        "[L,N,14,3] atom14 positions per layer (Angstrom)"));
    MF_TRY(write_tensor(w, "sm/angles", &o->sm_angles,
                        "[L,N,7,2] torsion angles (sin, cos) per layer"));
    const int32_t nrec = (int32_t)o->num_iterations;
    MF_TRY(mf_h5_write_array(w, "num_recycles", MF_I32, 0, NULL, &nrec));
    MF_TRY(mf_h5_write_attr_string(w, "num_recycles", "doc", "number of recycling iterations run"));
    for (int i = 0; rec && i < rec->count; i++) {
        const mf_h5_array *a = &rec->records[i].array;
        MF_TRY(mf_h5_write_array(w, rec->records[i].name, MF_F32, a->ndim, a->shape, a->data));
    }
    return MF_OK;
}

mf_status mf_alphafold_dump_write(const char *path, const mf_alphafold_outputs *o,
                                  const mf_alphafold_recorder *rec)
{
    mf_h5_writer w;
    MF_TRY(mf_h5_writer_open(&w, path));
    mf_status st = write_all(&w, o, rec);
    if (st == MF_OK) st = mf_h5_writer_commit(&w);
    if (st != MF_OK) {
        mf_h5_writer_abort(&w);
        return mf_error_context(st, "writing %s", path);
    }
    return MF_OK;
}
