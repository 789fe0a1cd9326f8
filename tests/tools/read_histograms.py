#!/usr/bin/env python3
"""Read the histogram files strand-bench writes, independently of its Rust code; print JSON.

Usage: read_histograms.py DIR

Every file in DIR is read by its extension:

- ``*.hgrm``: parsed against the percentile distribution format of Java's
  ``AbstractHistogram.outputPercentileDistribution`` (header, blank line, rows printed with
  ``%12.Nf %2.12f %10d %14.2f``, a last row at 100% without the last column, three ``#[...]``
  footer lines). Each line must be exactly what printf gives for the values parsed from it;
  any departure is listed in ``format_errors``.
- ``*.hlog``: the interval log, read with HdrHistogram_py's ``HistogramLogReader``
  (``pip install hdrhistogram``), which decodes each interval's V2 deflate histogram. The raw
  lines are also split by hand to report the header and the ``Interval_Max`` column. The
  intervals are merged per tag, and for each merged histogram ``spec_rows`` lists the rows
  Java's ``PercentileIterator`` (5 ticks per half distance) yields, computed here from
  HdrHistogram_py's buckets. (HdrHistogram_py's own ``output_percentile_distribution`` is no
  reference: it does not truncate the halving count as Java does, so its levels differ.)
- ``*.svg``: parsed with ``xml.etree`` (so it must be well-formed XML); its polylines
  (stroke colour, number of points) and texts are listed.

Exits 2 when HdrHistogram_py is missing, 1 when a file cannot be read at all.
"""

import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

try:
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader
except ImportError as error:
    sys.stderr.write(
        "read_histograms.py: cannot import HdrHistogram_py (%s): pip install hdrhistogram\n" % error
    )
    sys.exit(2)

HGRM_HEADER = "%12s %14s %10s %14s" % ("Value", "Percentile", "TotalCount", "1/(1-Percentile)")
LEGEND = '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'
PERCENTILES = [50.0, 90.0, 99.0, 99.9, 100.0]
SVG_NS = "{http://www.w3.org/2000/svg}"


def parse_hgrm(path):
    with open(path, encoding="ascii") as f:
        lines = f.read().split("\n")
    errors = []
    if lines[-1] != "":
        errors.append("the file does not end with a newline")
    lines = lines[:-1]
    if len(lines) < 5:
        return {"format_errors": ["only %d lines" % len(lines)]}
    if lines[0] != HGRM_HEADER:
        errors.append("header is %r, expected %r" % (lines[0], HGRM_HEADER))
    if lines[1] != "":
        errors.append("line 2 is not blank: %r" % lines[1])
    table, footer = lines[2:-3], lines[-3:]
    rows = []
    decimals = None
    for number, line in enumerate(table, start=3):
        fields = line.split()
        if len(fields) not in (3, 4):
            errors.append("line %d has %d fields: %r" % (number, len(fields), line))
            continue
        value_text, percentile_text, count_text = fields[:3]
        decimals = len(value_text.split(".")[1]) if "." in value_text else 0
        value, percentile, count = float(value_text), float(percentile_text), int(count_text)
        inverse = float(fields[3]) if len(fields) == 4 else None
        if inverse is None:
            expected = ("%12.*f %2.12f %10d" % (decimals, value, percentile, count))
        else:
            expected = ("%12.*f %2.12f %10d %14.2f" % (decimals, value, percentile, count, inverse))
            exact_inverse = 1.0 / (1.0 - percentile)
            if abs(inverse - exact_inverse) > 0.005 + 1e-9 * exact_inverse:
                errors.append("line %d: 1/(1-p) is %s, expected %.2f" % (number, fields[3], exact_inverse))
        if line != expected:
            errors.append("line %d is %r, printf gives %r" % (number, line, expected))
        rows.append({
            "value_text": value_text,
            "percentile_text": percentile_text,
            "value": value,
            "percentile": percentile,
            "total_count": count,
            "inverse": inverse,
        })
    check_rows(rows, errors)
    result = {"rows": rows, "value_decimals": decimals, "format_errors": errors}
    result.update(parse_hgrm_footer(footer, decimals, errors))
    return result


def check_rows(rows, errors):
    if not rows:
        return
    for before, after in zip(rows, rows[1:]):
        if not after["percentile"] > before["percentile"]:
            errors.append("percentile does not increase at %r" % after)
        if after["value"] < before["value"] or after["total_count"] < before["total_count"]:
            errors.append("value or count decreases at %r" % after)
    if rows[0]["percentile"] != 0.0:
        errors.append("the first row is not at percentile 0")
    last = rows[-1]
    if last["percentile"] != 1.0 or last["inverse"] is not None:
        errors.append("the last row is not a 3-column row at 1.000000000000: %r" % last)
    if any(row["inverse"] is None for row in rows[:-1]):
        errors.append("a row before the last lacks the 1/(1-Percentile) column")


def parse_hgrm_footer(footer, decimals, errors):
    decimals = 3 if decimals is None else decimals
    patterns = [
        r"#\[Mean    = (.{12}), StdDeviation   = (.{12})\]",
        r"#\[Max     = (.{12}), Total count    = (.{12})\]",
        r"#\[Buckets = (.{12}), SubBuckets     = (.{12})\]",
    ]
    found = []
    for line, pattern in zip(footer, patterns):
        match = re.fullmatch(pattern, line)
        if not match:
            errors.append("footer line %r does not match %r" % (line, pattern))
            return {}
        found.append((line, match.group(1).strip(), match.group(2).strip()))
    (mean_line, mean, stddev), (max_line, max_value, total), (buckets_line, buckets, sub) = found
    expected = [
        ("#[Mean    = %12.*f, StdDeviation   = %12.*f]" % (decimals, float(mean), decimals, float(stddev)), mean_line),
        ("#[Max     = %12.*f, Total count    = %12d]" % (decimals, float(max_value), int(total)), max_line),
        ("#[Buckets = %12d, SubBuckets     = %12d]" % (int(buckets), int(sub)), buckets_line),
    ]
    for want, got in expected:
        if want != got:
            errors.append("footer line %r, printf gives %r" % (got, want))
    return {
        "mean": float(mean),
        "stddev": float(stddev),
        "max_text": max_value,
        "max": float(max_value),
        "total_count": int(total),
        "buckets": int(buckets),
        "sub_buckets": int(sub),
    }


def read_raw_log(path):
    """The header and the text columns of each interval line, split by hand."""
    header = {"comments": [], "legend": False}
    lines = []
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#[StartTime: "):
                header["start_time"] = float(line[len("#[StartTime: "):].split(" ")[0])
                header["start_time_line"] = line
            elif line.startswith("#[BaseTime: "):
                header["base_time"] = float(line[len("#[BaseTime: "):].split(" ")[0])
            elif line.startswith("#[Histogram log format version "):
                header["format_version"] = line[len("#[Histogram log format version "):-1]
            elif line.startswith("#"):
                header["comments"].append(line)
            elif line == LEGEND:
                header["legend"] = True
            elif line:
                tag = None
                if line.startswith("Tag="):
                    tag, line = line[4:].split(",", 1)
                start, length, max_text, payload = line.split(",")
                lines.append({"tag": tag, "start_text": start, "length_text": length,
                              "interval_max_text": max_text, "payload_chars": len(payload)})
    return header, lines


def java_percentile_rows(histogram, ticks_per_half_distance=5):
    """Java's PercentileIterator over HdrHistogram_py's buckets: [value, level %, count] rows."""
    total = histogram.get_total_count()
    rows = []
    if total == 0:
        return rows
    level, running, last_value, exhausted = 0.0, 0, 0, False
    for index in range(histogram.counts_len):
        count = histogram.get_count_at_index(index)
        if count == 0:
            continue
        running += count
        last_value = histogram.get_highest_equivalent_value(histogram.get_value_from_index(index))
        percent = (100.0 * running) / total
        while not exhausted and percent >= level:
            rows.append([last_value, level, running])
            if running >= total:
                exhausted = True
                break
            halvings = int(math.log(100.0 / (100.0 - level)) / math.log(2))
            next_level = level + 100.0 / (ticks_per_half_distance * 2.0 ** (halvings + 1))
            exhausted = not (level < next_level < 100.0)
            level = next_level
        if running >= total:
            break
    rows.append([last_value, 100.0, running])
    return rows


def summary(histogram):
    return {
        "total_count": histogram.get_total_count(),
        "max": histogram.get_max_value(),
        "min": histogram.get_min_value(),
        "mean": histogram.get_mean_value(),
        "stddev": histogram.get_stddev(),
        "lowest_trackable": histogram.lowest_trackable_value,
        "highest_trackable": histogram.highest_trackable_value,
        "significant_figures": histogram.significant_figures,
        "buckets": histogram.bucket_count,
        "sub_buckets": histogram.sub_bucket_count,
    }


def read_hlog(path):
    header, raw = read_raw_log(path)
    reader = HistogramLogReader(path, HdrHistogram(1, 2, 3))
    intervals = []
    while True:
        histogram = reader.get_next_interval_histogram()
        if histogram is None:
            break
        intervals.append(histogram)
    reader.close()
    if len(intervals) != len(raw):
        raise ValueError("%s: the reader decoded %d intervals, the file has %d interval lines"
                         % (path, len(intervals), len(raw)))
    start = reader.get_start_time_sec()
    result = {"header": header, "reader_start_time": start, "intervals": [], "merged": {}}
    by_tag = {}
    for histogram, line in zip(intervals, raw):
        tag = histogram.get_tag()
        entry = summary(histogram)
        entry.update(line)
        entry["reader_tag"] = tag
        entry["start_offset_s"] = round(histogram.get_start_time_stamp() / 1000.0 - start, 3)
        entry["length_s"] = round((histogram.get_end_time_stamp() - histogram.get_start_time_stamp()) / 1000.0, 3)
        result["intervals"].append(entry)
        by_tag.setdefault(tag or "", []).append(histogram)
    for tag, histograms in by_tag.items():
        merged = HdrHistogram(
            min(h.lowest_trackable_value for h in histograms),
            max(h.highest_trackable_value for h in histograms),
            histograms[0].significant_figures,
        )
        for histogram in histograms:
            merged.add(histogram)
        entry = summary(merged)
        entry["percentiles"] = {
            "%g" % p: merged.get_value_at_percentile(p) for p in PERCENTILES
        } if merged.get_total_count() else {}
        entry["spec_rows"] = java_percentile_rows(merged)
        result["merged"][tag] = entry
    return result


def read_svg(path):
    root = ElementTree.parse(path).getroot()
    polylines = []
    for element in root.iter(SVG_NS + "polyline"):
        polylines.append({
            "stroke": element.get("stroke"),
            "points": len(element.get("points", "").split()),
        })
    texts = [" ".join("".join(element.itertext()).split()) for element in root.iter(SVG_NS + "text")]
    return {"root": root.tag, "width": root.get("width"), "height": root.get("height"),
            "polylines": polylines, "texts": texts}


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: read_histograms.py DIR\n")
        return 1
    directory = argv[1]
    readers = {".hgrm": parse_hgrm, ".hlog": read_hlog, ".svg": read_svg}
    out = {}
    for name in sorted(os.listdir(directory)):
        reader = readers.get(os.path.splitext(name)[1])
        if reader is None:
            continue
        try:
            out[name] = reader(os.path.join(directory, name))
        except Exception as error:  # noqa: BLE001 - report which file and why, then fail
            sys.stderr.write("read_histograms.py: %s: %s: %s\n" % (name, type(error).__name__, error))
            return 1
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
