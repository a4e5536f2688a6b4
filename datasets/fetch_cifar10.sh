#!/bin/sh
# fetch_cifar10.sh: download the CIFAR-10 binary version, check it, and extract it to
# <dest>/cifar-10-batches-bin (dest: the repository's data/ by default), where
# xt.data.cifar10 looks for it.
#
#   datasets/fetch_cifar10.sh [dest]
#
# The archive's size and MD5 are the ones the CIFAR page publishes; a mismatch stops the
# script before anything is extracted. Needs curl or wget, md5sum and tar.
set -eu
URL=${XT_CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz}
MD5=c32a1d4ab5d03f1284b67883e8d87530
SIZE=170052171
BATCH_SIZE=30730000   # 10000 records of 1 label byte + 3072 pixel bytes

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$ROOT/data}
OUT=$DEST/cifar-10-batches-bin
BATCHES="data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"

complete() {
    for f in $BATCHES; do
        [ -f "$OUT/$f" ] && [ "$(wc -c < "$OUT/$f")" -eq "$BATCH_SIZE" ] || return 1
    done
}

if complete; then
    echo "fetch_cifar10: $OUT is already complete"
    exit 0
fi

mkdir -p "$DEST"
ARCHIVE=$DEST/cifar-10-binary.tar.gz
PARTIAL=$ARCHIVE.part
if [ ! -f "$ARCHIVE" ]; then
    echo "fetch_cifar10: downloading $URL"
    if command -v curl >/dev/null; then
        curl -fL --retry 3 -o "$PARTIAL" "$URL"
    elif command -v wget >/dev/null; then
        wget -O "$PARTIAL" "$URL"
    else
        echo "fetch_cifar10: needs curl or wget" >&2
        exit 1
    fi
    mv "$PARTIAL" "$ARCHIVE"
fi

size=$(wc -c < "$ARCHIVE")
sum=$(md5sum "$ARCHIVE" | cut -d' ' -f1)
if [ "$size" -ne "$SIZE" ] || [ "$sum" != "$MD5" ]; then
    echo "fetch_cifar10: $ARCHIVE is $size bytes with MD5 $sum;" \
         "expected $SIZE bytes with MD5 $MD5. Removed it; run again to download it anew." >&2
    rm -f "$ARCHIVE"
    exit 1
fi

echo "fetch_cifar10: checked; extracting into $DEST"
tar -xzf "$ARCHIVE" -C "$DEST" cifar-10-batches-bin
if ! complete; then
    echo "fetch_cifar10: the archive did not give the six batches of $BATCH_SIZE bytes in $OUT" >&2
    exit 1
fi
rm -f "$ARCHIVE"
echo "fetch_cifar10: CIFAR-10 is in $OUT"
