"""Picture sizes of a HEIF-family file (HEIC, AVIF), read from its boxes, never decoded.

HEIC and AVIF are the same container (ISO BMFF boxes, "items" described in a ``meta``
box) around different codecs: HEVC and AV1. ``image_input`` refuses an oversized
picture before any decoder runs, and for these files the size a decoder will allocate
is written in more than one place, not all of which the decoders check against each
other:

* ``ispe``: the declared width and height of an image item (a tile, a thumbnail, an
  alpha plane or the picture itself). This is what Pillow and pillow-heif report as
  ``Image.size`` before decoding.
* ``grid`` and ``iovl`` derived items carry their own output canvas size in their
  item data; the decoders allocate that canvas.
* An AV1 item's bitstream starts with a sequence header that bounds every frame in it
  (``max_frame_width``/``max_frame_height``). libavif hands the bitstream to dav1d
  without comparing it with ``ispe``, so a 1 KB AVIF that declares 64 x 48 can make
  dav1d allocate a frame of 16384 x 16384 (measured: a declared 64 x 48 hiding an
  8000 x 6000 frame cost 105 MB of RSS). libheif does check an HEVC stream against
  ``ispe`` before decoding (it refused the same trick at 22 MB), so HEVC streams are
  not parsed here.

``declared_size`` returns the largest width and the largest height found anywhere in
those places, so whatever a decoder trusts is checked against the limits. ``ispe`` is
the coded size before any ``clap`` crop, so it can exceed the visible picture by the
encoder's padding (x265 codes odd sizes one pixel larger, and a 64 x 48 as 64 x 64);
the check errs on the side of the larger number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

Size = tuple[int, int]

# A box cannot be shorter than its 8-byte header; a file has a handful of top-level
# boxes and a few dozen properties and items. The caps keep a file of millions of
# empty boxes from costing seconds of Python before it is refused.
_MAX_BOXES_PER_CONTAINER = 4096
_MAX_ITEMS = 4096
_MAX_OBUS_PER_ITEM = 4096
_DERIVED_ITEM_TYPES = (b"grid", b"iovl")
_AV1_ITEM_TYPE = b"av01"
_OBU_SEQUENCE_HEADER = 1


class CorruptHeader(ValueError):
    """The boxes are truncated or inconsistent; the file must not reach a decoder."""


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int  # first byte of the payload (after the header)
    end: int  # one past the last byte of the payload


def brands(data: bytes) -> list[bytes]:
    """The ``ftyp`` major brand followed by the compatible brands that ``data`` holds.

    Empty when ``data`` does not start with an ``ftyp`` box. A head cut short yields
    only the brands it contains, so a 12-byte head gives just the major brand.
    """
    if data[4:8] != b"ftyp" or len(data) < 12:
        return []
    declared = int.from_bytes(data[:4], "big")
    end = min(len(data), declared) if declared >= 16 else min(len(data), 12)
    found = [data[8:12]]
    found.extend(data[offset : offset + 4] for offset in range(16, end - 3, 4))
    return found


def declared_size(data: bytes) -> Size | None:
    """The largest width and largest height any picture in the file declares.

    Looks at every ``ispe``, every ``grid``/``iovl`` canvas and, for AV1, every
    sequence header in ``av1C`` and in the items' bitstreams. None when no size is
    declared at all; ``CorruptHeader`` when the boxes are truncated or inconsistent.
    """
    metas: list[_Box] = []
    try:
        for box in _boxes(data, 0, len(data)):
            if box.kind == b"meta":
                metas.append(box)
    except CorruptHeader:
        # A broken box after the description (a cut mdat, trailing bytes) is for the
        # decoder to refuse; item data that is missing is caught where it is read.
        if not metas:
            raise
    sizes = [size for meta in metas for size in _sizes_in_meta(data, meta)]
    if not sizes:
        return None
    return max(width for width, _ in sizes), max(height for _, height in sizes)


def _boxes(data: bytes, start: int, end: int) -> Iterator[_Box]:
    """The boxes laid end to end in ``data[start:end]``."""
    offset, count = start, 0
    while offset < end:
        count += 1
        if count > _MAX_BOXES_PER_CONTAINER:
            raise CorruptHeader("too many boxes")
        if offset + 8 > end:
            raise CorruptHeader("box header cut short")
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if offset + 16 > end:
                raise CorruptHeader("box header cut short")
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
            header = 16
        elif size == 0:  # the box runs to the end of its container
            size = end - offset
        if size < header or offset + size > end:
            raise CorruptHeader(f"box {kind!r} overruns its container")
        yield _Box(kind, offset + header, offset + size)
        offset += size


def _child(data: bytes, parent: _Box, kind: bytes, *, skip: int = 0) -> _Box | None:
    """The first child box of ``kind``; ``skip`` bytes of the parent's own fields first."""
    for box in _boxes(data, parent.start + skip, parent.end):
        if box.kind == kind:
            return box
    return None


class _Reader:
    """Big-endian fields of one box's payload, refusing to read past its end."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data, self.offset, self._end = data, start, end

    def uint(self, size: int) -> int:
        if self.offset + size > self._end:
            raise CorruptHeader("field cut short")
        value = int.from_bytes(self._data[self.offset : self.offset + size], "big")
        self.offset += size
        return value

    def raw(self, size: int) -> bytes:
        if self.offset + size > self._end:
            raise CorruptHeader("field cut short")
        value = self._data[self.offset : self.offset + size]
        self.offset += size
        return value


def _sizes_in_meta(data: bytes, meta: _Box) -> list[Size]:
    """Every size declared by the items of one ``meta`` box (a FullBox: 4 bytes first)."""
    sizes: list[Size] = []
    properties = _child(data, meta, b"iprp", skip=4)
    container = _child(data, properties, b"ipco") if properties else None
    for prop in _boxes(data, container.start, container.end) if container else ():
        if prop.kind == b"ispe":
            fields = _Reader(data, prop.start + 4, prop.end)  # FullBox version and flags
            sizes.append((fields.uint(4), fields.uint(4)))
        elif prop.kind == b"av1C":
            # Four bytes of codec configuration, then optional config OBUs.
            sizes.extend(_av1_sequence_sizes(data[prop.start + 4 : prop.end]))

    types = _item_types(data, meta)
    wanted = {item_id for item_id, kind in types.items()
              if kind in _DERIVED_ITEM_TYPES or kind == _AV1_ITEM_TYPE}
    payloads = _item_payloads(data, meta, wanted) if wanted else {}
    for item_id in sorted(wanted):
        if item_id not in payloads:
            raise CorruptHeader(f"item {item_id} has no location")
        if types[item_id] == _AV1_ITEM_TYPE:
            sizes.extend(_av1_sequence_sizes(payloads[item_id]))
        else:
            sizes.append(_derived_canvas(payloads[item_id], types[item_id]))
    return sizes


def _item_types(data: bytes, meta: _Box) -> dict[int, bytes]:
    """item_ID -> item_type, from ``iinf``'s ``infe`` entries (versions 2 and 3)."""
    info = _child(data, meta, b"iinf", skip=4)
    if info is None:
        return {}
    version = data[info.start] if info.start < info.end else 0
    skip = 4 + (2 if version == 0 else 4)  # FullBox header, then the entry count
    types: dict[int, bytes] = {}
    for entry in _boxes(data, info.start + skip, info.end):
        if entry.kind != b"infe":
            continue
        fields = _Reader(data, entry.start, entry.end)
        entry_version = fields.uint(1)
        fields.uint(3)  # flags
        if entry_version < 2:
            continue  # versions 0 and 1 have no item type: not image items
        item_id = fields.uint(2 if entry_version == 2 else 4)
        fields.uint(2)  # item_protection_index
        types[item_id] = fields.raw(4)
        if len(types) > _MAX_ITEMS:
            raise CorruptHeader("too many items")
    return types


def _item_payloads(data: bytes, meta: _Box, wanted: set[int]) -> dict[int, bytes]:
    """item_ID -> the item's bytes (its extents joined), for the ``wanted`` items.

    From ``iloc`` and, for construction method 1, ``idat``; method 2 (data taken from
    other items) is refused, as libavif does. Extents could name the same bytes over
    and over, so everything gathered together may not exceed the file's own size.
    """
    location = _child(data, meta, b"iloc", skip=4)
    if location is None:
        return {}
    idat = _child(data, meta, b"idat", skip=4)
    fields = _Reader(data, location.start, location.end)
    version = fields.uint(1)
    fields.uint(3)  # flags
    sizes = fields.uint(2)
    offset_size, length_size = sizes >> 12, (sizes >> 8) & 0xF
    base_offset_size, index_size = (sizes >> 4) & 0xF, sizes & 0xF
    if version not in (1, 2):
        index_size = 0  # reserved in version 0
    count = fields.uint(2 if version < 2 else 4)
    if count > _MAX_ITEMS:
        raise CorruptHeader("too many items")
    payloads: dict[int, bytes] = {}
    budget = len(data)
    for _ in range(count):
        item_id = fields.uint(2 if version < 2 else 4)
        method = fields.uint(2) & 0xF if version in (1, 2) else 0
        fields.uint(2)  # data_reference_index
        base = fields.uint(base_offset_size)
        chunks: list[bytes] = []
        for _ in range(fields.uint(2)):
            fields.uint(index_size)
            offset, length = base + fields.uint(offset_size), fields.uint(length_size)
            if item_id in wanted:
                chunk = _extent(data, idat, method, offset, length)
                budget -= len(chunk)
                if budget < 0:
                    raise CorruptHeader("item data adds up to more than the file")
                chunks.append(chunk)
        if item_id in wanted:
            payloads[item_id] = b"".join(chunks)
    return payloads


def _extent(data: bytes, idat: _Box | None, method: int, offset: int, length: int) -> bytes:
    if method == 0:
        start, end = offset, len(data)
    elif method == 1 and idat is not None:
        start, end = idat.start + offset, idat.end
    else:
        raise CorruptHeader(f"item data by construction method {method}")
    stop = end if length == 0 else start + length  # length 0: to the end
    if start > end or stop > end:
        raise CorruptHeader("item data beyond the end of the file")
    return data[start:stop]


def _derived_canvas(payload: bytes, kind: bytes) -> Size:
    """The output size of a ``grid`` (ImageGrid) or ``iovl`` (ImageOverlay) item."""
    fields = _Reader(payload, 0, len(payload))
    fields.uint(1)  # version
    wide = fields.uint(1) & 1  # flags: 32-bit sizes
    if kind == b"grid":
        fields.uint(2)  # rows_minus_one, columns_minus_one
    else:
        fields.uint(8)  # canvas_fill_value, four 16-bit channels
    size = 4 if wide else 2
    return fields.uint(size), fields.uint(size)


def _leb128(data: bytes, offset: int) -> tuple[int, int]:
    """An AV1 leb128 value and the offset after it."""
    value = 0
    for index in range(8):
        if offset + index >= len(data):
            raise CorruptHeader("OBU size cut short")
        byte = data[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, offset + index + 1
    raise CorruptHeader("OBU size longer than 8 bytes")


def _av1_sequence_sizes(stream: bytes) -> list[Size]:
    """``max_frame_width`` x ``max_frame_height`` of every sequence header OBU in ``stream``."""
    sizes: list[Size] = []
    offset, count = 0, 0
    while offset < len(stream):
        count += 1
        if count > _MAX_OBUS_PER_ITEM:
            raise CorruptHeader("too many OBUs")
        header = stream[offset]
        obu_type = (header >> 3) & 0xF
        start = offset + (2 if header & 0x04 else 1)  # obu_extension_flag adds a byte
        if header & 0x02:  # obu_has_size_field
            length, start = _leb128(stream, start)
        else:
            length = len(stream) - start
        end = start + length
        if end > len(stream):
            raise CorruptHeader("OBU overruns its item")
        if obu_type == _OBU_SEQUENCE_HEADER:
            sizes.append(_sequence_header_size(stream[start:end]))
        offset = end
    return sizes


class _Bits:
    """MSB-first bit reader for the AV1 sequence header (spec section 4.10 f(n), uvlc)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._position = data, 0

    def f(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self._position >> 3
            if byte >= len(self._data):
                raise CorruptHeader("sequence header cut short")
            value = (value << 1) | ((self._data[byte] >> (7 - (self._position & 7))) & 1)
            self._position += 1
        return value

    def uvlc(self) -> int:
        leading = 0
        while not self.f(1):  # ends at the data's end at the latest
            leading += 1
        if leading >= 32:
            return (1 << 32) - 1
        return self.f(leading) + (1 << leading) - 1


def _sequence_header_size(payload: bytes) -> Size:
    """Reads an AV1 sequence_header_obu (AV1 spec 5.5) up to the maximum frame size."""
    bits = _Bits(payload)
    bits.f(3)  # seq_profile
    bits.f(1)  # still_picture
    if bits.f(1):  # reduced_still_picture_header
        bits.f(5)  # seq_level_idx[0]
    else:
        decoder_model = False
        buffer_delay_length = 0
        if bits.f(1):  # timing_info_present_flag
            bits.f(32)  # num_units_in_display_tick
            bits.f(32)  # time_scale
            if bits.f(1):  # equal_picture_interval
                bits.uvlc()  # num_ticks_per_picture_minus_1
            decoder_model = bool(bits.f(1))
            if decoder_model:
                buffer_delay_length = bits.f(5) + 1
                bits.f(32)  # num_units_in_decoding_tick
                bits.f(5)  # buffer_removal_time_length_minus_1
                bits.f(5)  # frame_presentation_time_length_minus_1
        initial_display_delay = bool(bits.f(1))
        for _ in range(bits.f(5) + 1):  # operating_points_cnt_minus_1
            bits.f(12)  # operating_point_idc
            if bits.f(5) > 7:  # seq_level_idx
                bits.f(1)  # seq_tier
            if decoder_model and bits.f(1):  # decoder_model_present_for_this_op
                bits.f(buffer_delay_length)  # decoder_buffer_delay
                bits.f(buffer_delay_length)  # encoder_buffer_delay
                bits.f(1)  # low_delay_mode_flag
            if initial_display_delay and bits.f(1):
                bits.f(4)  # initial_display_delay_minus_1
    width_bits = bits.f(4) + 1
    height_bits = bits.f(4) + 1
    return bits.f(width_bits) + 1, bits.f(height_bits) + 1
