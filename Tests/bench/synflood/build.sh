#!/usr/bin/env bash
# Builds the lab's SYN generator into DIR (default .build/bench): the BPF object with Debian's clang-14, its
# skeleton with bpftool, the loader with gcc against libbpf. Rebuilds only when a source is newer. Prints the
# path of the binary. Needs clang-14, llvm-strip-14, bpftool, gcc and libbpf-dev (make deps installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../../.build/bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)
binary=$out/synflood
if [[ -x "$binary" && "$binary" -nt "$here/synflood.c" && "$binary" -nt "$here/synflood.bpf.c" ]]; then
    echo "$binary"
    exit 0
fi
for tool in clang-14 llvm-strip-14 bpftool gcc; do
    command -v "$tool" >/dev/null || { echo "synflood: $tool is missing (make deps installs it)" >&2; exit 1; }
done
multiarch=$(gcc -print-multiarch)
# -ffreestanding: <stdint.h> is clang's own, not glibc's (which wants 32-bit stubs under -target bpf).
clang-14 -g -O2 -target bpf -ffreestanding -Wall -Wextra -Werror -I "/usr/include/$multiarch" \
    -c "$here/synflood.bpf.c" -o "$out/synflood.bpf.o"
llvm-strip-14 -g "$out/synflood.bpf.o"
bpftool gen skeleton "$out/synflood.bpf.o" name synflood_bpf >"$out/synflood.skel.h"
gcc -O2 -Wall -Wextra -Werror -I "$out" "$here/synflood.c" -o "$binary.tmp" -lbpf
mv "$binary.tmp" "$binary"
echo "$binary"
