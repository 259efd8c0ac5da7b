#!/usr/bin/env bash
# The C API from C: build the library, check the committed header is current, compile the
# error-path test and the example with AddressSanitizer + UndefinedBehaviorSanitizer and run
# them, run the custom-calibration test, check the example's embeddings equal the CLI's bit for bit, run the error-path test
# under valgrind (no leaks), and build the example with CMake through the generated pkg-config
# file.
# Usage: uniface-capi/tests/run.sh   (from anywhere; needs ../shared or UNIFACE_SHARED_DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
shared=${UNIFACE_SHARED_DIR:-$root/../shared}
lfw=$shared/data/lfw
out=$root/target/c-tests
rm -rf "$out" && mkdir -p "$out"

echo "-- library and header"
# the whole workspace, so that features unify as in `cargo test --workspace --release` and
# the crates it compiled are reused
cargo build --release --workspace
generated=$(ls -t target/release/build/uniface-capi-*/out/uniface.h | head -1)
if ! diff -u uniface-capi/include/uniface.h "$generated"; then
  echo "uniface-capi/include/uniface.h is stale: cp $generated uniface-capi/include/uniface.h" >&2
  exit 1
fi
test -f target/release/libuniface.so && test -f target/release/libuniface.a
test -f target/release/uniface.pc

cflags=(-std=c11 -Wall -Wextra -Werror -g -I uniface-capi/include)
san=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
export LD_LIBRARY_PATH=$root/target/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo "-- error paths (ASan + UBSan)"
cc "${cflags[@]}" "${san[@]}" uniface-capi/tests/c/errors.c -L target/release -luniface -lm -o "$out/errors"
mkdir -p "$out/scratch"
"$out/errors" "$lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg" "$out/scratch"

echo "-- a custom calibration table attached to a gallery (ASan + UBSan)"
cc "${cflags[@]}" "${san[@]}" uniface-capi/tests/c/calibration.c -L target/release -luniface -lm -o "$out/calibration"
mkdir -p "$out/scratch-cal"
"$out/calibration" "$lfw" "$out/scratch-cal"

echo "-- example (plain cc, documented command) under ASan + UBSan"
a=$lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg
b=$lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg
probe=$lfw/Aaron_Peirsol/Aaron_Peirsol_0003.jpg
cc "${cflags[@]}" "${san[@]}" examples/c/enroll_identify.c -L target/release -luniface -o "$out/enroll_identify"
"$out/enroll_identify" "$out/g1" Aaron_Peirsol "$a" Abel_Pacheco "$b" "$probe" > "$out/example.txt"
grep -v "^embedding " "$out/example.txt"
grep -q "^probe .*: Aaron_Peirsol$" "$out/example.txt"

echo "-- the example's embeddings equal the CLI's"
./target/release/uniface embed --json "$a" "$b" "$probe" > "$out/cli.jsonl"
python3 - "$out/example.txt" "$out/cli.jsonl" <<'PY'
import json, struct, sys
f32 = lambda x: struct.pack("<f", float(x))
c = {l.split()[1]: [f32(v) for v in l.split()[2:]] for l in open(sys.argv[1]) if l.startswith("embedding ")}
n = 0
for line in open(sys.argv[2]):
    row = json.loads(line)
    faces = row["faces"]
    best = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    assert c[row["image"]] == [f32(v) for v in best["embedding"]], row["image"]
    n += 1
assert n == 3, n
print(f"{n} photos: C and CLI embeddings identical (all 128 floats, bit for bit)")
PY

echo "-- valgrind (leaks): the error-path test, which touches every handle type"
# (valgrind runs the threads one at a time: one rayon worker and fair scheduling keep it to
# a few minutes; the same program already ran under ASan's leak checker above)
cc "${cflags[@]}" uniface-capi/tests/c/errors.c -L target/release -luniface -lm -o "$out/errors_plain"
mkdir -p "$out/scratch-vg"
RAYON_NUM_THREADS=1 valgrind --fair-sched=yes --leak-check=full --errors-for-leak-kinds=definite \
  --error-exitcode=3 "$out/errors_plain" "$lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg" "$out/scratch-vg" \
  > /dev/null 2> "$out/valgrind.txt" || { cat "$out/valgrind.txt" >&2; exit 1; }
grep -E "definitely lost: 0 bytes|no leaks are possible" "$out/valgrind.txt"
grep "ERROR SUMMARY" "$out/valgrind.txt"

if command -v cmake >/dev/null 2>&1; then
  echo "-- CMake through pkg-config"
  PKG_CONFIG_PATH=$root/target/release cmake -S examples/c -B "$out/cmake" >/dev/null
  cmake --build "$out/cmake" >/dev/null
  "$out/cmake/enroll_identify" "$out/g3" Aaron_Peirsol "$a" Abel_Pacheco "$b" "$probe" | grep "^probe"
else
  echo "-- CMake not installed: skipped the CMake build (apt-get install cmake)"
fi
echo "C API checks passed"
