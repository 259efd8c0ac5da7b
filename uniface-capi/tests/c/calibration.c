/* A host's own calibration table from C: load it from a JSON file, read thresholds and
 * decisions from it, attach it to a gallery and get the gallery's decisions from it (the best
 * of a subject's templates held to the target as a whole); the shipped table and the
 * face-selection rule beside it; a template sealed under a host key for a database row; and a
 * gallery encrypted at rest (its key, erasure on removal, key rotation).
 * Run under ASan + UBSan by uniface-capi/tests/run.sh.
 * Usage: calibration LFW_DIR SCRATCH_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uniface.h"

static int failures = 0;

#define EXPECT(cond)                                                            \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

#define CHECK(call)                                                              \
    do {                                                                         \
        uf_status s_ = (call);                                                   \
        if (s_ != UF_STATUS_OK) {                                                \
            char m_[512] = "";                                                   \
            uf_last_error_message(m_, sizeof m_, NULL);                          \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,  \
                    uf_status_str(s_), m_);                                      \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* A hand-made table, far looser than the shipped one: 1e-2 at distance 1.0, 1e-1 at 1.2;
 * 100,000 impostor pairs, so 10 false matches (FMR 1e-4) is the least a target may rest on,
 * and the curve starts at 1e-3: the smallest supported FMR is 1e-3. */
static const char *TABLE =
    "{\"model_id\": \"dlib-resnet-v1\", \"metric\": \"euclidean\", \"selection\": \"largest\",\n"
    " \"method\": \"hand-made for the C test\", \"identities\": 100, \"images\": 1000,\n"
    " \"rows\": [\n"
    "  {\"target_fmr\": 0.1, \"threshold\": 1.2, \"impostor_comparisons\": 100000,\n"
    "   \"false_matches\": 10000, \"genuine_comparisons\": 1000, \"false_non_matches\": 0},\n"
    "  {\"target_fmr\": 0.01, \"threshold\": 1.0, \"impostor_comparisons\": 100000,\n"
    "   \"false_matches\": 1000, \"genuine_comparisons\": 1000, \"false_non_matches\": 10}],\n"
    " \"curve\": [{\"threshold\": 0.8, \"fmr\": 0.001}, {\"threshold\": 1.0, \"fmr\": 0.01},\n"
    "           {\"threshold\": 1.2, \"fmr\": 0.1}, {\"threshold\": 2.0, \"fmr\": 1.0}]}\n";

static uf_template *template_of(const uf_analyzer *a, const char *lfw, const char *photo) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", lfw, photo);
    uf_faces *faces = NULL;
    CHECK(uf_analyzer_analyze_file(a, path, &faces));
    EXPECT(uf_faces_count(faces) >= 1);
    uf_template *t = NULL;
    CHECK(uf_faces_template(faces, 0, &t));
    uf_faces_free(faces);
    return t;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LFW_DIR SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    const char *lfw = argv[1], *scratch = argv[2];

    /* the custom table, from a file as `uniface calibrate --out` writes one */
    char table_path[4096];
    snprintf(table_path, sizeof table_path, "%s/table.json", scratch);
    FILE *f = fopen(table_path, "w");
    EXPECT(f != NULL && fputs(TABLE, f) >= 0);
    fclose(f);
    uf_calibration *custom = NULL;
    CHECK(uf_calibration_load(table_path, &custom));
    float t = 0;
    CHECK(uf_calibration_threshold(custom, 1e-2, &t));
    EXPECT(t == 1.0f);
    CHECK(uf_calibration_threshold(custom, 1e-1, &t));
    EXPECT(t == 1.2f);
    double min_fmr = 0;
    uint32_t selection = 99;
    CHECK(uf_calibration_info(custom, &min_fmr, &selection));
    EXPECT(fabs(min_fmr - 1e-3) < 1e-12);
    EXPECT(selection == UF_SELECTION_LARGEST);
    /* below what the table supports: refused, not guessed */
    EXPECT(uf_calibration_threshold(custom, 1e-4, &t) == UF_STATUS_INVALID_ARGUMENT);
    uf_decision d;
    CHECK(uf_calibration_decide(custom, 0.9f, 1e-2, 1, &d));
    EXPECT(d.is_match && d.threshold == 1.0f && d.comparisons == 1);
    CHECK(uf_calibration_decide(custom, 1.1f, 1e-2, 1, &d));
    EXPECT(!d.is_match);
    EXPECT(uf_calibration_decide(custom, 0.9f, 1e-2, 0, &d) == UF_STATUS_INVALID_ARGUMENT);
    uf_calibration *bad = NULL;
    EXPECT(uf_calibration_from_json("{\"rows\": []}", &bad) == UF_STATUS_INVALID_ARGUMENT);
    EXPECT(bad == NULL);
    EXPECT(uf_calibration_from_json(TABLE, &bad) == UF_STATUS_OK);
    uf_calibration_free(bad);
    EXPECT(uf_calibration_load("/no/such/table.json", &bad) == UF_STATUS_NOT_FOUND);

    /* the shipped table records the rule it was made with */
    uf_calibration *shipped = NULL;
    CHECK(uf_calibration_default(&shipped));
    CHECK(uf_calibration_info(shipped, &min_fmr, &selection));
    EXPECT(selection == UF_SELECTION_NEAREST_CENTRE && min_fmr <= 1e-6);
    float shipped_t = 0;
    CHECK(uf_calibration_threshold(shipped, 1e-2, &shipped_t));
    EXPECT(shipped_t < 0.7f);

    uf_analyzer *a = NULL;
    CHECK(uf_analyzer_new(NULL, &a));
    EXPECT(uf_analyzer_set_selection(a, 7) == UF_STATUS_INVALID_ARGUMENT);
    CHECK(uf_analyzer_set_selection(a, UF_SELECTION_LARGEST));
    uf_template *aaron1 = template_of(a, lfw, "Aaron_Peirsol/Aaron_Peirsol_0001.jpg");
    uf_template *aaron2 = template_of(a, lfw, "Aaron_Peirsol/Aaron_Peirsol_0003.jpg");
    uf_template *abel = template_of(a, lfw, "Abel_Pacheco/Abel_Pacheco_0001.jpg");

    /* a gallery deciding with the custom table */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/gallery", scratch);
    uf_gallery *g = NULL;
    CHECK(uf_gallery_open(dir, true, 1, UF_DURABILITY_SYNC, &g));
    CHECK(uf_gallery_set_calibration(g, custom));
    uf_calibration_free(custom); /* the gallery keeps its own copy */
    custom = NULL;
    CHECK(uf_gallery_enroll(g, "Aaron_Peirsol", aaron1, NULL));
    CHECK(uf_gallery_enroll(g, "Aaron_Peirsol", aaron2, NULL));
    uf_decision v;
    CHECK(uf_gallery_verify(g, "Aaron_Peirsol", abel, 1e-1, &v));
    /* the best of 2 templates held to 1e-1: the threshold for 1 - 0.9^(1/2) = 0.0513 per
     * comparison, log-linearly between the 1e-2 (1.0) and 1e-1 (1.2) points */
    double per = 1.0 - sqrt(0.9);
    double expected = 1.0 + 0.2 * (log(per) - log(1e-2)) / (log(1e-1) - log(1e-2));
    EXPECT(v.comparisons == 2);
    EXPECT(fabs(v.threshold - expected) < 1e-5);
    EXPECT(v.threshold > shipped_t); /* the custom table, not the shipped one */
    EXPECT(v.distance < v.threshold && v.is_match); /* a loose table matches strangers */
    uf_decision shipped_v;
    CHECK(uf_verify(aaron1, abel, 1e-1, &shipped_v));
    EXPECT(!shipped_v.is_match); /* uf_verify keeps the shipped table */
    /* per comparison 1e-3 / 2 is below the custom table's 1e-3: refused */
    EXPECT(uf_gallery_verify(g, "Aaron_Peirsol", abel, 1e-3, &v) == UF_STATUS_INVALID_ARGUMENT);
    printf("custom table: verify threshold %.4f (best of %u) for FMR 1e-1, shipped 1e-2 "
           "threshold %.4f; distance %.4f\n",
           v.threshold, v.comparisons, shipped_t, v.distance);

    CHECK(uf_gallery_close(g));

    /* a template sealed for a database row: opens with its key and row, nothing else */
    uint8_t key[UF_KEY_LEN], other[UF_KEY_LEN];
    CHECK(uf_key_generate(key));
    CHECK(uf_key_generate(other));
    EXPECT(memcmp(key, other, UF_KEY_LEN) != 0);
    const uint8_t *row = (const uint8_t *)"subject 7";
    size_t need = 0;
    EXPECT(uf_template_seal(abel, key, row, 9, NULL, 0, &need) == UF_STATUS_BUFFER_TOO_SMALL);
    uint8_t *sealed = malloc(need);
    CHECK(uf_template_seal(abel, key, row, 9, sealed, need, NULL));
    uf_template *back = NULL;
    CHECK(uf_template_open_sealed(key, row, 9, sealed, need, &back));
    float va[UF_EMBEDDING_DIM], vb[UF_EMBEDDING_DIM];
    CHECK(uf_template_vector(abel, va, UF_EMBEDDING_DIM));
    CHECK(uf_template_vector(back, vb, UF_EMBEDDING_DIM));
    EXPECT(memcmp(va, vb, sizeof va) == 0);
    uf_template_free(back);
    uf_template *none = NULL;
    EXPECT(uf_template_open_sealed(other, row, 9, sealed, need, &none) == UF_STATUS_CRYPTO);
    EXPECT(uf_template_open_sealed(key, (const uint8_t *)"subject 8", 9, sealed, need, &none) ==
           UF_STATUS_CRYPTO);
    sealed[need - 1] ^= 1;
    EXPECT(uf_template_open_sealed(key, row, 9, sealed, need, &none) == UF_STATUS_CRYPTO);
    EXPECT(none == NULL);
    free(sealed);

    /* a gallery encrypted at rest: it opens only with its key, removal erases, keys rotate */
    char edir[4096];
    snprintf(edir, sizeof edir, "%s/encrypted", scratch);
    uf_gallery *e = NULL;
    CHECK(uf_gallery_open_encrypted(edir, true, 2, UF_DURABILITY_SYNC, key, &e));
    CHECK(uf_gallery_enroll(e, "Aaron_Peirsol", aaron1, NULL));
    CHECK(uf_gallery_enroll(e, "Abel_Pacheco", abel, NULL));
    CHECK(uf_gallery_checkpoint(e));
    CHECK(uf_gallery_close(e));
    e = NULL;
    EXPECT(uf_gallery_open(edir, false, 1, UF_DURABILITY_SYNC, &e) == UF_STATUS_CRYPTO);
    EXPECT(uf_gallery_open_encrypted(edir, false, 1, UF_DURABILITY_SYNC, other, &e) ==
           UF_STATUS_CRYPTO);
    EXPECT(uf_gallery_open_encrypted(edir, false, 1, UF_DURABILITY_SYNC, NULL, &e) ==
           UF_STATUS_NULL_PARAMETER);
    EXPECT(e == NULL);
    CHECK(uf_gallery_open_encrypted(edir, false, 1, UF_DURABILITY_SYNC, key, &e));
    EXPECT(uf_gallery_len(e) == 2);
    uf_candidate found[2];
    size_t nfound = 0;
    bool known = false;
    CHECK(uf_gallery_identify(e, aaron2, 1e-3, found, 2, &nfound, &known));
    EXPECT(known && strcmp(found[0].subject, "Aaron_Peirsol") == 0);
    CHECK(uf_gallery_rotate_key(e, other));
    size_t removed = 0;
    CHECK(uf_gallery_remove(e, "Aaron_Peirsol", &removed));
    EXPECT(removed == 1);
    CHECK(uf_gallery_close(e));
    e = NULL;
    EXPECT(uf_gallery_open_encrypted(edir, false, 1, UF_DURABILITY_SYNC, key, &e) ==
           UF_STATUS_CRYPTO);
    CHECK(uf_gallery_open_encrypted(edir, false, 1, UF_DURABILITY_SYNC, other, &e));
    EXPECT(uf_gallery_len(e) == 1);
    CHECK(uf_gallery_identify(e, aaron2, 1e-3, found, 2, &nfound, &known));
    EXPECT(!known && nfound == 1 && strcmp(found[0].subject, "Abel_Pacheco") == 0);
    CHECK(uf_gallery_close(e));
    /* a plain gallery refuses a key */
    EXPECT(uf_gallery_open_encrypted(dir, false, 1, UF_DURABILITY_SYNC, key, &e) ==
           UF_STATUS_INVALID_ARGUMENT);
    printf("encrypted gallery: opens only with its key; removal erased; rotated\n");

    uf_template_free(aaron1);
    uf_template_free(aaron2);
    uf_template_free(abel);
    uf_calibration_free(shipped);
    uf_calibration_free(NULL);
    uf_analyzer_free(a);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("calibration: all checks passed\n");
    return 0;
}
