/* Error paths of the C API, run under AddressSanitizer and UndefinedBehaviorSanitizer by
 * uniface-capi/tests/run.sh: NULL arguments, a corrupt and a truncated image, wrong buffer
 * sizes, damaged templates, an internal panic, and the free(NULL) no-ops.
 * Usage: errors LFW_PHOTO SCRATCH_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "uniface.h"

static int failures = 0;

#define EXPECT(cond)                                                              \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);   \
            failures++;                                                           \
        }                                                                         \
    } while (0)

#define EXPECT_STATUS(call, want)                                                 \
    do {                                                                          \
        uf_status got_ = (call);                                                  \
        if (got_ != (want)) {                                                     \
            char m_[512] = "";                                                    \
            uf_last_error_message(m_, sizeof m_, NULL);                           \
            fprintf(stderr, "%s:%d: %s -> %s (%s), expected %s\n", __FILE__,      \
                    __LINE__, #call, uf_status_str(got_), m_, uf_status_str(want)); \
            failures++;                                                           \
        }                                                                         \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void last_error_contains(const char *needle) {
    size_t needed = 0;
    /* asking for the size with no buffer */
    EXPECT(uf_last_error_message(NULL, 0, &needed) == UF_STATUS_BUFFER_TOO_SMALL);
    EXPECT(needed > 1);
    char *buf = malloc(needed);
    EXPECT(uf_last_error_message(buf, needed, NULL) == UF_STATUS_OK);
    if (strstr(buf, needle) == NULL) {
        fprintf(stderr, "last error \"%s\" lacks \"%s\"\n", buf, needle);
        failures++;
    }
    free(buf);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LFW_PHOTO SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    /* version macros agree with the library */
    EXPECT(strcmp(uf_version(), UF_VERSION_STRING) == 0);
    EXPECT(strcmp(uf_status_str(UF_STATUS_OK), "ok") == 0);
    /* integers, not enums, cross the boundary: values outside the enums are defined */
    EXPECT(strcmp(uf_status_str(999), "unknown status code") == 0);
    EXPECT(strcmp(uf_status_str(UINT32_MAX), "unknown status code") == 0);
    EXPECT(strcmp(uf_reason_str(8), "blurry") == 0);
    EXPECT(strcmp(uf_reason_str(999), "unknown") == 0);

    /* free(NULL) is a no-op everywhere */
    uf_analyzer_free(NULL);
    uf_faces_free(NULL);
    uf_template_free(NULL);
    EXPECT_STATUS(uf_gallery_close(NULL), UF_STATUS_OK);
    EXPECT(uf_faces_count(NULL) == 0);
    EXPECT(uf_gallery_len(NULL) == 0);

    /* a panic inside the library comes back as a status */
    EXPECT_STATUS(uf_debug_trigger_panic(), UF_STATUS_PANIC);
    last_error_contains("uf_debug_trigger_panic");

    /* NULL arguments */
    EXPECT_STATUS(uf_analyzer_new(NULL, NULL), UF_STATUS_NULL_PARAMETER);
    last_error_contains("out");
    uf_analyzer *analyzer = NULL;
    EXPECT_STATUS(uf_analyzer_new("/no/such/models", &analyzer), UF_STATUS_NOT_FOUND);
    EXPECT(analyzer == NULL); /* outputs only on success */
    EXPECT_STATUS(uf_analyzer_new(NULL, &analyzer), UF_STATUS_OK);
    if (analyzer == NULL) return 1;
    uf_faces *faces = NULL;
    EXPECT_STATUS(uf_analyzer_analyze_file(NULL, argv[1], &faces), UF_STATUS_NULL_PARAMETER);
    EXPECT_STATUS(uf_analyzer_analyze_file(analyzer, NULL, &faces), UF_STATUS_NULL_PARAMETER);
    EXPECT_STATUS(uf_analyzer_analyze_file(analyzer, argv[1], NULL), UF_STATUS_NULL_PARAMETER);
    EXPECT_STATUS(uf_analyzer_analyze_encoded(analyzer, NULL, 10, &faces), UF_STATUS_NULL_PARAMETER);
    EXPECT(faces == NULL);

    /* missing, corrupt and truncated images */
    EXPECT_STATUS(uf_analyzer_analyze_file(analyzer, "/no/such/photo.jpg", &faces), UF_STATUS_NOT_FOUND);
    const unsigned char garbage[] = "this is not an image at all";
    EXPECT_STATUS(uf_analyzer_analyze_encoded(analyzer, garbage, sizeof garbage, &faces), UF_STATUS_IMAGE);
    size_t len = 0;
    unsigned char *jpeg = read_file(argv[1], &len);
    EXPECT(jpeg != NULL && len > 1000);
    if (jpeg == NULL) return 1;
    EXPECT_STATUS(uf_analyzer_analyze_encoded(analyzer, jpeg, 300, &faces), UF_STATUS_IMAGE);
    EXPECT_STATUS(uf_analyzer_analyze_encoded(analyzer, jpeg, 0, &faces), UF_STATUS_IMAGE);
    EXPECT(faces == NULL);

    /* raw pixels: a buffer shorter than width × height × channels, a stride below a row */
    unsigned char pixels[64 * 64 * 3];
    memset(pixels, 128, sizeof pixels);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels - 1, 64, 64, 64 * 3,
                                             UF_PIXEL_RGB, &faces), UF_STATUS_IMAGE);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 64, 64, 10,
                                             UF_PIXEL_RGB, &faces), UF_STATUS_IMAGE);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 0, 64, 64 * 3,
                                             UF_PIXEL_RGB, &faces), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 64, 64, 64 * 3,
                                             99, &faces), UF_STATUS_INVALID_ARGUMENT);
    /* extreme sizes: typed errors, never an allocation of that size or UF_STATUS_PANIC */
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, UINT32_MAX,
                                             UINT32_MAX, SIZE_MAX, UF_PIXEL_RGB, &faces), UF_STATUS_IMAGE);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 64, 64, SIZE_MAX,
                                             UF_PIXEL_RGB, &faces), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 64, 64, SIZE_MAX / 2 + 1,
                                             UF_PIXEL_RGB, &faces), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 64, 64, 64 * 3,
                                             UINT32_MAX, &faces), UF_STATUS_INVALID_ARGUMENT);
    EXPECT(faces == NULL);
    uf_assessment assessment;
    EXPECT_STATUS(uf_analyzer_assess_file(analyzer, argv[1], UINT32_MAX, &assessment),
                  UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_analyzer_assess_file(analyzer, argv[1], 7, &assessment),
                  UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_analyzer_analyze_pixels(analyzer, pixels, sizeof pixels, 64, 64, 64 * 3,
                                             UF_PIXEL_RGB, &faces), UF_STATUS_OK);
    EXPECT(uf_faces_count(faces) == 0); /* grey square: no face, not an error */
    uf_faces_free(faces);
    faces = NULL;

    /* a real photo, then out-of-range indices and short buffers */
    EXPECT_STATUS(uf_analyzer_analyze_encoded(analyzer, jpeg, len, &faces), UF_STATUS_OK);
    EXPECT(uf_faces_count(faces) == 1);
    float embedding[UF_EMBEDDING_DIM];
    float landmarks[UF_LANDMARK_VALUES];
    uf_box box;
    EXPECT_STATUS(uf_faces_embedding(faces, 0, embedding, UF_EMBEDDING_DIM - 1), UF_STATUS_BUFFER_TOO_SMALL);
    EXPECT_STATUS(uf_faces_embedding(faces, 1, embedding, UF_EMBEDDING_DIM), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_faces_embedding(faces, SIZE_MAX, embedding, UF_EMBEDDING_DIM), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_faces_box(faces, SIZE_MAX, &box), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_faces_embedding(faces, 0, NULL, UF_EMBEDDING_DIM), UF_STATUS_NULL_PARAMETER);
    EXPECT_STATUS(uf_faces_landmarks(faces, 0, landmarks, 9), UF_STATUS_BUFFER_TOO_SMALL);
    EXPECT_STATUS(uf_faces_landmarks(faces, 0, landmarks, UF_LANDMARK_VALUES), UF_STATUS_OK);
    EXPECT_STATUS(uf_faces_box(faces, 0, &box), UF_STATUS_OK);
    EXPECT(box.left < landmarks[0] && landmarks[0] < box.right);
    EXPECT_STATUS(uf_faces_embedding(faces, 0, embedding, UF_EMBEDDING_DIM), UF_STATUS_OK);

    /* templates: size query, short buffer, damage, wrong length, NaN */
    uf_template *t = NULL;
    EXPECT_STATUS(uf_faces_template(faces, 0, &t), UF_STATUS_OK);
    size_t needed = 0;
    EXPECT_STATUS(uf_template_serialize(t, NULL, 0, &needed), UF_STATUS_BUFFER_TOO_SMALL);
    EXPECT(needed > UF_EMBEDDING_DIM * 4);
    unsigned char *bytes = malloc(needed);
    EXPECT_STATUS(uf_template_serialize(t, bytes, needed - 1, NULL), UF_STATUS_BUFFER_TOO_SMALL);
    EXPECT_STATUS(uf_template_serialize(t, bytes, needed, NULL), UF_STATUS_OK);
    uf_template *back = NULL;
    EXPECT_STATUS(uf_template_deserialize(bytes, needed, &back), UF_STATUS_OK);
    float vector[UF_EMBEDDING_DIM];
    EXPECT_STATUS(uf_template_vector(back, vector, UF_EMBEDDING_DIM), UF_STATUS_OK);
    EXPECT(memcmp(vector, embedding, sizeof vector) == 0);
    uf_decision d;
    EXPECT_STATUS(uf_verify(t, back, 1e-4, &d), UF_STATUS_OK);
    EXPECT(d.is_match && d.distance == 0.0f);
    EXPECT_STATUS(uf_verify(t, back, 0.0, &d), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_verify(t, NULL, 1e-4, &d), UF_STATUS_NULL_PARAMETER);
    uf_template_free(back);
    back = NULL;
    bytes[needed / 2] ^= 0x10;
    EXPECT_STATUS(uf_template_deserialize(bytes, needed, &back), UF_STATUS_TEMPLATE);
    EXPECT_STATUS(uf_template_deserialize(bytes, 7, &back), UF_STATUS_TEMPLATE);
    EXPECT(back == NULL);
    free(bytes);
    EXPECT_STATUS(uf_template_from_embedding(embedding, 64, &back), UF_STATUS_INVALID_ARGUMENT);
    embedding[5] = NAN;
    EXPECT_STATUS(uf_template_from_embedding(embedding, UF_EMBEDDING_DIM, &back), UF_STATUS_TEMPLATE);
    EXPECT(back == NULL);

    /* gallery: NULLs, an over-long subject, identify into a zero-capacity array */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/gallery", argv[2]);
    uf_gallery *g = NULL;
    EXPECT_STATUS(uf_gallery_open(dir, false, 1, UF_DURABILITY_SYNC, &g), UF_STATUS_NOT_FOUND);
    EXPECT_STATUS(uf_gallery_open(dir, true, 1, 3, &g), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_gallery_open(dir, true, 1, UINT32_MAX, &g), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_gallery_open(dir, true, 0, UF_DURABILITY_SYNC, &g), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_gallery_open(dir, true, 4097, UF_DURABILITY_SYNC, &g), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_gallery_open(dir, true, SIZE_MAX, UF_DURABILITY_SYNC, &g), UF_STATUS_INVALID_ARGUMENT);
    EXPECT(g == NULL);
    EXPECT_STATUS(uf_gallery_open(dir, true, 1, UF_DURABILITY_SYNC, &g), UF_STATUS_OK);
    EXPECT_STATUS(uf_gallery_enroll(g, NULL, t, NULL), UF_STATUS_NULL_PARAMETER);
    char long_subject[400];
    memset(long_subject, 'x', sizeof long_subject - 1);
    long_subject[sizeof long_subject - 1] = 0;
    EXPECT_STATUS(uf_gallery_enroll(g, long_subject, t, NULL), UF_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(uf_gallery_enroll(g, "", t, NULL), UF_STATUS_INVALID_ARGUMENT);
    uint64_t id = 0;
    EXPECT_STATUS(uf_gallery_enroll(g, "someone", t, &id), UF_STATUS_OK);
    EXPECT(uf_gallery_len(g) == 1);
    size_t count = 99;
    bool known = false;
    EXPECT_STATUS(uf_gallery_identify(g, t, 1e-4, NULL, 0, &count, &known), UF_STATUS_OK);
    EXPECT(count == 0 && known);
    EXPECT_STATUS(uf_gallery_identify(g, t, 1e-4, NULL, 3, &count, &known), UF_STATUS_NULL_PARAMETER);
    uf_candidate c[2];
    EXPECT_STATUS(uf_gallery_identify(g, t, 1e-4, c, 2, &count, &known), UF_STATUS_OK);
    EXPECT(count == 1 && strcmp(c[0].subject, "someone") == 0 && c[0].template_id == id);
    /* a capacity of 10^12 sizes nothing: at most the gallery's size is written */
    EXPECT_STATUS(uf_gallery_identify(g, t, 1e-4, c, (size_t)1000000000000ULL, &count, &known), UF_STATUS_OK);
    EXPECT(count == 1);
    EXPECT_STATUS(uf_gallery_identify(g, t, 1e-4, c, SIZE_MAX, &count, &known), UF_STATUS_OK);
    EXPECT(count == 1);
    EXPECT_STATUS(uf_gallery_verify(g, "nobody", t, 1e-4, &d), UF_STATUS_INVALID_ARGUMENT);
    size_t removed = 0;
    EXPECT_STATUS(uf_gallery_remove(g, "someone", &removed), UF_STATUS_OK);
    EXPECT(removed == 1);
    EXPECT_STATUS(uf_gallery_checkpoint(g), UF_STATUS_OK);
    /* one writer per gallery: a second writer is refused, a reader is let in and cannot write */
    uf_gallery *second = NULL;
    EXPECT_STATUS(uf_gallery_open(dir, false, 1, UF_DURABILITY_SYNC, &second), UF_STATUS_LOCKED);
    EXPECT(second == NULL);
    uf_gallery *reader = NULL;
    EXPECT_STATUS(uf_gallery_open_read_only(dir, &reader), UF_STATUS_OK);
    EXPECT_STATUS(uf_gallery_enroll(reader, "someone", t, NULL), UF_STATUS_READ_ONLY);
    size_t report_len = 0;
    EXPECT_STATUS(uf_gallery_open_report(reader, NULL, 0, &report_len), UF_STATUS_BUFFER_TOO_SMALL);
    char report[256];
    EXPECT_STATUS(uf_gallery_open_report(reader, report, sizeof report, &report_len), UF_STATUS_OK);
    EXPECT(report_len == 1 && report[0] == 0); /* a clean open reports nothing */
    EXPECT_STATUS(uf_gallery_close(reader), UF_STATUS_OK);
    EXPECT_STATUS(uf_gallery_close(g), UF_STATUS_OK);
    /* a corrupt manifest is a typed error, not a crash */
    char manifest[4200];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", dir);
    FILE *m = fopen(manifest, "wb");
    if (m) {
        fputs("{ not json", m);
        fclose(m);
    }
    g = NULL;
    EXPECT_STATUS(uf_gallery_open(dir, false, 1, UF_DURABILITY_SYNC, &g), UF_STATUS_GALLERY);
    EXPECT(g == NULL);

    /* clustering: two tight pairs far apart, then the error paths */
    {
        const float pts[8] = {0.0f, 0.0f, 0.01f, 0.0f, 1.0f, 1.0f, 1.0f, 1.01f};
        uint32_t labels[4] = {9, 9, 9, 9};
        EXPECT_STATUS(uf_cluster(pts, 4, 2, UF_CLUSTER_AVERAGE_LINKAGE, 0.0, 0.1f, labels), UF_STATUS_OK);
        EXPECT(labels[0] == 0 && labels[1] == 0 && labels[2] == 1 && labels[3] == 1);
        EXPECT_STATUS(uf_cluster(pts, 4, 2, UF_CLUSTER_CHINESE_WHISPERS, 0.0, 0.1f, labels), UF_STATUS_OK);
        EXPECT(labels[0] == labels[1] && labels[2] == labels[3] && labels[0] != labels[2]);
        EXPECT_STATUS(uf_cluster(pts, 4, 2, 7, 0.0, 0.1f, labels), UF_STATUS_INVALID_ARGUMENT);
        last_error_contains("uf_cluster_method");
        EXPECT_STATUS(uf_cluster(NULL, 4, 2, 0, 0.0, 0.1f, labels), UF_STATUS_NULL_PARAMETER);
        EXPECT_STATUS(uf_cluster(pts, 4, 0, 0, 0.0, 0.1f, labels), UF_STATUS_INVALID_ARGUMENT);
        EXPECT_STATUS(uf_cluster(pts, (size_t)-1, 2, 0, 0.0, 0.1f, labels), UF_STATUS_INVALID_ARGUMENT);
        EXPECT_STATUS(uf_cluster(NULL, 0, 2, 0, 4e-4, 0.0f, NULL), UF_STATUS_OK);
        size_t pairs = 1;
        EXPECT_STATUS(uf_gallery_duplicates(NULL, 1e-4, NULL, 0, &pairs), UF_STATUS_NULL_PARAMETER);
    }

    uf_template_free(t);
    uf_faces_free(faces);
    uf_analyzer_free(analyzer);
    free(jpeg);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("C API error paths: all checks passed\n");
    return 0;
}
