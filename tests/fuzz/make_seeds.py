"""make_seeds.py: the starting corpus of each fuzz harness, small valid files built byte by
byte (plus tests/fixtures/images). Run with any python3:  python3 tests/fuzz/make_seeds.py
Writes tests/fuzz/seeds/{image,idx,cifar,npy}/. The image seeds start with the harness's
channel byte. seeds/image/smooth.jpg was written once by xt_image_save_jpeg (quality 90,
a 16x24 RGB gradient), as python has no JPEG encoder here; this script keeps it.
"""
import gzip
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
FIXTURES = os.path.join(HERE, "..", "fixtures", "images")


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def bmp_24bit(width, height, rgb):
    row = (width * 3 + 3) // 4 * 4
    pixels = bytearray(row * height)
    for y in range(height):
        for x in range(width):
            r, g, b = rgb[(y * width + x) * 3:(y * width + x) * 3 + 3]
            o = (height - 1 - y) * row + x * 3
            pixels[o:o + 3] = bytes([b, g, r])
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + bytes(pixels)


def npy(descr, shape, payload):
    shape_text = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def main():
    for name in sorted(os.listdir(FIXTURES)):
        with open(os.path.join(FIXTURES, name), "rb") as f:
            write("image", name, b"\x00" + f.read())
    rgb = bytes(range(1, 19))
    write("image", "hand.bmp", b"\x03" + bmp_24bit(3, 2, rgb))
    write("image", "hand.ppm", b"\x00" + b"P6\n3 2\n255\n" + rgb)
    write("image", "hand.pgm", b"\x01" + b"P5\n3 2\n255\n" + rgb[:6])

    idx = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]) + bytes(range(24))
    write("idx", "images.idx", idx)
    write("idx", "images.idx.gz", gzip.compress(idx, mtime=0))
    write("idx", "labels.idx", bytes([0, 0, 8, 1, 0, 0, 0, 5, 9, 0, 0, 3, 1]))

    image = bytes((i * 7) % 256 for i in range(3072))
    write("cifar", "cifar10.bin", bytes([3]) + image)
    write("cifar", "cifar100.bin", bytes([11, 57]) + image)

    write("npy", "f4.npy", npy("<f4", (2, 3), struct.pack("<6f", 0, 1.5, -2, 3, 4, 5)))
    write("npy", "i8.npy", npy("<i8", (4,), struct.pack("<4q", 1, -2, 3, 1 << 40)))
    write("npy", "u1.npy", npy("|u1", (2, 2), bytes([0, 255, 7, 9])))


if __name__ == "__main__":
    main()
