"""Readers: raw records with their locations, and every kind of bad content as a located problem."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefkit.data.examples import Location
from prefkit.data.readers import UNREAD_REST, DataFileError, read_records, write_records


def _lines(result) -> list[int | None]:
    return [loc.line for loc, _ in result.records]


def _problems(result) -> list[tuple[int | None, str]]:
    return [(p.location.line, p.kind) for p in result.problems]


# -- JSONL ------------------------------------------------------------------------------------------


def test_jsonl_records_carry_their_line_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": "日本語"}\r\n   \n{"a": 3}\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [1, 3, 5]
    assert [r["a"] for _, r in result.records] == [1, "日本語", 3]
    assert result.problems == []
    assert result.total == 3
    assert result.records[0][0] == Location(str(path), line=1)


def test_jsonl_bom_is_fine_and_file_label_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    records, problems = read_records(path, file_label="train.jsonl")
    assert problems == []
    assert records == [(Location("train.jsonl", line=1), {"a": 1})]


def test_jsonl_malformed_line_3_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3,, "b": 4}\n{"a": 4}\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [1, 2, 4]
    (problem,) = result.problems
    assert problem.location.line == 3
    assert problem.kind == "malformed_json"
    assert problem.message.startswith("malformed JSON: Expecting property name")
    assert "(column 9)" in problem.message
    assert result.total == 4


def test_jsonl_invalid_utf8_costs_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a"\xff: 2}\n{"a": "\xc3\xa9\xff"}\n{"a": 4}\n')
    result = read_records(path)
    assert _lines(result) == [1, 4]
    assert _problems(result) == [(2, "encoding"), (3, "encoding")]
    assert result.problems[0].message == "not valid UTF-8 (byte 0xff at column 5)"
    # the column counts characters, so the two-byte é before the bad byte counts once
    assert result.problems[1].message == "not valid UTF-8 (byte 0xff at column 9)"


def test_jsonl_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": "cut of', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [1, 2]
    assert _problems(result) == [(3, "truncated")]
    assert result.problems[0].message == "truncated last line: the file seems to have been cut off"


def test_jsonl_malformed_last_line_with_newline_is_not_truncation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": "x\n', encoding="utf-8")
    assert _problems(read_records(path)) == [(2, "malformed_json")]


def test_jsonl_last_line_cut_inside_a_multibyte_character_is_truncation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"a": 1}\n{"a": "日'.encode()[:-1])
    assert _problems(read_records(path)) == [(2, "truncated")]


def test_jsonl_non_object_records_are_returned_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('"just text"\n[1, 2]\n{"a": 1}\n', encoding="utf-8")
    records, problems = read_records(path)
    assert [r for _, r in records] == ["just text", [1, 2], {"a": 1}]
    assert problems == []


def test_jsonl_one_megabyte_string(tmp_path: Path) -> None:
    big = "あ" * 1_000_000
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": big}, ensure_ascii=False) + "\n", encoding="utf-8")
    records, problems = read_records(path)
    assert problems == []
    assert records[0][1]["prompt"] == big


# -- JSON -------------------------------------------------------------------------------------------


def test_json_list_elements_get_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n  {"a": 1},\n  {\n    "a": 2\n  },\n\n  {"a": "三"}, {"a": 4}\n]\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2, 3, 7, 7]
    assert [r["a"] for _, r in result.records] == [1, 2, "三", 4]
    assert result.problems == []


def test_json_object_with_one_list_key(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"version": 2, "meta": {"x": 1},\n "data": [\n  {"a": 1},\n  {"a": 2}\n]}', "utf-8")
    result = read_records(path)
    assert _lines(result) == [3, 4]


def test_json_object_without_exactly_one_list_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"train": [], "test": []}', encoding="utf-8")
    with pytest.raises(DataFileError, match="exactly one list"):
        read_records(path)
    path.write_text('"text"', encoding="utf-8")
    with pytest.raises(DataFileError, match="expected a JSON list"):
        read_records(path)


def test_json_malformed_mid_list_keeps_what_came_before_and_after(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n {"a": 1},\n {"a": 2,\n  "b": ,},\n {"a": 4}\n]\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2, 5]  # reading goes on at the next record
    assert _problems(result) == [(4, "malformed_json")]
    assert "reading went on at line 5" in result.problems[0].message
    assert result.total == 3


def test_json_syntax_error_at_record_11_of_100_keeps_the_other_99(tmp_path: Path) -> None:
    """Issue #11: a .json file broken at record 11 used to report 10 records and drop the other 90."""
    rows = [json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}, indent=1) for i in range(100)]
    rows[10] = rows[10].replace('"a"', '"a" "oops"')
    path = tmp_path / "d.json"
    path.write_text("[\n" + ",\n".join(rows) + "\n]\n", encoding="utf-8")
    result = read_records(path)
    assert len(result.records) == 99 and result.total == 100
    assert [p.kind for p in result.problems] == ["malformed_json"]


def test_json_missing_comma_between_records(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n {"a": 1}\n {"a": 2}\n]', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2, 3]
    assert _problems(result) == [(3, "malformed_json")]  # which makes record 3 unusable


def test_json_damage_with_no_record_after_it_leaves_the_rest_unread(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n {"a": 1},\n {"a": 2,\n  "b": ,}\n]\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2]
    assert _problems(result) == [(4, UNREAD_REST)]
    assert "the rest of the file from here could not be read" in result.problems[0].message


def test_json_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n {"a": 1},\n {"a": "cut', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2]
    assert _problems(result) == [(3, "truncated")]


def test_json_invalid_utf8_names_the_line_and_keeps_other_records(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n {"a": 1},\n {"a": "bad \xfe byte"},\n {"a": 3}\n]\n')
    result = read_records(path)
    assert _lines(result) == [2, 4]
    assert _problems(result) == [(3, "encoding")]
    assert "byte 0xfe" in result.problems[0].message


def test_json_empty_list_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(" [ ] ", encoding="utf-8")
    assert read_records(path).total == 0
    path.write_text("", encoding="utf-8")
    assert read_records(path).total == 0


# -- CSV --------------------------------------------------------------------------------------------


def test_csv_line_numbers_with_a_quoted_multiline_cell(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        'prompt,chosen\n"one\nline two\nline three",a\n\nplain,"日本語"\n"x",[1]\n', encoding="utf-8"
    )
    result = read_records(path)
    assert _lines(result) == [2, 6, 7]
    assert result.records[0][1] == {"prompt": "one\nline two\nline three", "chosen": "a"}
    assert result.records[2][1] == {"prompt": "x", "chosen": "[1]"}  # JSON-ish cells stay strings


def test_csv_wrong_field_count_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n1,2\n1,2,3\n\xff,4\n5,6\n")
    result = read_records(path)
    assert _lines(result) == [2, 5]
    assert _problems(result) == [(3, "malformed_csv"), (4, "encoding")]


def test_csv_one_megabyte_cell(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a\n" + "x" * 1_000_000 + "\n", encoding="utf-8")
    records, problems = read_records(path)
    assert problems == [] and len(records[0][1]["a"]) == 1_000_000


# -- Parquet ----------------------------------------------------------------------------------------


def test_parquet_rows_are_1_based(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"a": "x", "b": [1]}, {"a": "y", "b": None}]), path)
    records, problems = read_records(path)
    assert problems == []
    assert records == [
        (Location(str(path), row=1), {"a": "x", "b": [1]}),
        (Location(str(path), row=2), {"a": "y", "b": None}),
    ]
    assert str(records[1][0]) == f"{path}:row 2"


def test_parquet_that_is_not_parquet_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_text("not parquet", encoding="utf-8")
    with pytest.raises(DataFileError, match="cannot read as Parquet"):
        read_records(path)


# -- whole-file errors and writing ------------------------------------------------------------------


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"d\.txt.*'\.txt'.*\.csv, \.json, \.jsonl, \.ndjson, \.parquet"):
        read_records(tmp_path / "d.txt")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataFileError, match="is a folder"):
        read_records(tmp_path / "dir.json")


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".parquet"])
def test_write_then_read_gives_the_records_back(tmp_path: Path, ext: str) -> None:
    records = [{"p": "日本語", "q": 'a,"b"\nc'}, {"p": "", "q": "z"}]
    path = tmp_path / f"out{ext}"
    write_records(records, path)
    back = [r for _, r in read_records(path).records]
    assert back == records
    if ext in (".jsonl", ".json"):
        assert "日本語" in path.read_text(encoding="utf-8")  # ensure_ascii=False


def test_csv_refuses_non_text_fields_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with pytest.raises(DataFileError, match="'history' as list"):
        write_records([{"a": "x", "history": [["u", "a"]]}], path)
    assert list(tmp_path.iterdir()) == []


def test_json_object_wrapper_with_a_broken_list_keeps_the_good_records(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"data": [\n {"a": 1},\n {"a": oops},\n {"a": 3}\n]}', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2, 4]
    assert _problems(result) == [(3, "malformed_json")]


def test_csv_unterminated_quote_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('a,b\n1,2\n"open,3\n4,5\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2]
    assert _problems(result) == [(3, UNREAD_REST)]
    assert "lines 3-4 (the rest of the file) could not be read" in result.problems[0].message


def test_csv_a_malformed_row_costs_that_row_only(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('a,b\n1,2\n3,"x"y\n5,6\n', encoding="utf-8")
    result = read_records(path)
    assert _lines(result) == [2, 4]
    assert _problems(result) == [(3, "malformed_csv")]


def test_csv_duplicated_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,chosen\nq,a,b\n", encoding="utf-8")
    with pytest.raises(
        DataFileError, match=r"d.csv:1: header: column 'chosen' appears twice \(columns 2 and 3\)"
    ):
        read_records(path)
