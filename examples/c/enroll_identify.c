/* Enroll two photos and identify a third with the UniFace C API.
 *
 *   cargo build --release -p uniface-capi
 *   cc -std=c11 -Wall -Wextra -I uniface-capi/include examples/c/enroll_identify.c \
 *      -L target/release -luniface -o enroll_identify
 *   LD_LIBRARY_PATH=target/release ./enroll_identify GALLERY_DIR \
 *      alice alice1.jpg bob bob1.jpg probe.jpg
 *
 * Prints each photo's embedding (one line, "%.9g" round-trips every float) and the ranked
 * candidates for the probe. Exit status 0 on success, 1 on any failure (with the message).
 */
#include <stdio.h>
#include <stdlib.h>

#include "uniface.h"

static int fail(const char *what, uf_status status) {
    char message[512];
    size_t needed = 0;
    if (uf_last_error_message(message, sizeof message, &needed) != UF_STATUS_OK) {
        snprintf(message, sizeof message, "(message of %zu bytes)", needed);
    }
    fprintf(stderr, "%s: %s: %s\n", what, uf_status_str(status), message);
    return 1;
}

/* The template of the largest face of `path` (NULL on failure, message printed). */
static uf_template *largest_face(const uf_analyzer *analyzer, const char *path) {
    uf_faces *faces = NULL;
    uf_status s = uf_analyzer_analyze_file(analyzer, path, &faces);
    if (s != UF_STATUS_OK) {
        fail(path, s);
        return NULL;
    }
    size_t n = uf_faces_count(faces), best = 0;
    int64_t best_area = -1;
    for (size_t i = 0; i < n; i++) {
        uf_box box;
        if (uf_faces_box(faces, i, &box) == UF_STATUS_OK) {
            int64_t area = (box.right - box.left) * (box.bottom - box.top);
            if (area > best_area) {
                best_area = area;
                best = i;
            }
        }
    }
    uf_template *template = NULL;
    if (n == 0) {
        fprintf(stderr, "%s: no face\n", path);
    } else {
        float embedding[UF_EMBEDDING_DIM];
        s = uf_faces_embedding(faces, best, embedding, UF_EMBEDDING_DIM);
        if (s == UF_STATUS_OK) {
            printf("embedding %s", path);
            for (size_t i = 0; i < UF_EMBEDDING_DIM; i++) printf(" %.9g", embedding[i]);
            printf("\n");
            s = uf_faces_template(faces, best, &template);
        }
        if (s != UF_STATUS_OK) fail(path, s);
    }
    uf_faces_free(faces);
    return template;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s GALLERY_DIR SUBJECT_A PHOTO_A SUBJECT_B PHOTO_B PROBE\n", argv[0]);
        return 2;
    }
    printf("uniface %s (header %s)\n", uf_version(), UF_VERSION_STRING);
    uf_analyzer *analyzer = NULL;
    uf_status s = uf_analyzer_new(NULL, &analyzer); /* default model store */
    if (s != UF_STATUS_OK) return fail("loading the models", s);
    uf_gallery *gallery = NULL;
    s = uf_gallery_open(argv[1], true, 1, UF_DURABILITY_SYNC, &gallery);
    if (s != UF_STATUS_OK) {
        uf_analyzer_free(analyzer);
        return fail(argv[1], s);
    }
    int status = 0;
    for (int i = 2; i <= 4 && status == 0; i += 2) {
        uf_template *t = largest_face(analyzer, argv[i + 1]);
        if (t == NULL) {
            status = 1;
            break;
        }
        uint64_t id = 0;
        s = uf_gallery_enroll(gallery, argv[i], t, &id);
        uf_template_free(t);
        if (s != UF_STATUS_OK) status = fail(argv[i], s);
        else printf("enrolled %s as template %llu\n", argv[i], (unsigned long long)id);
    }
    uf_template *probe = status == 0 ? largest_face(analyzer, argv[6]) : NULL;
    if (status == 0 && probe == NULL) status = 1;
    if (status == 0) {
        uf_candidate candidates[4];
        size_t count = 0;
        bool known = false;
        s = uf_gallery_identify(gallery, probe, 1e-4, candidates, 4, &count, &known);
        if (s != UF_STATUS_OK) {
            status = fail("identify", s);
        } else {
            printf("probe %s: %s\n", argv[6], known ? candidates[0].subject : "unknown");
            for (size_t i = 0; i < count; i++) {
                printf("  candidate %s distance %.4f similarity %.3f\n", candidates[i].subject,
                       candidates[i].distance, candidates[i].similarity);
            }
        }
    }
    uf_template_free(probe);
    s = uf_gallery_close(gallery);
    if (s != UF_STATUS_OK && status == 0) status = fail("close", s);
    uf_analyzer_free(analyzer);
    return status;
}
