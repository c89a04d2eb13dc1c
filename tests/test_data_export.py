"""OpenAI chat JSONL: every line parses back to the course's messages."""
import json
import subprocess
import sys

import pytest

from data import DataError, Item
from data.export import SYSTEM, check_line, main, messages_for, write_chat_jsonl

ITEMS = [Item("Acme Filter", "Acme Filter\nFits most fridges.", 12.5), Item("Café “Deluxe”", "Café “Deluxe”\nÜber", 0.99)]


def test_messages_match_the_course():
    assert messages_for(ITEMS[0]) == [
        {"role": "system", "content": "You estimate prices of items."},
        {"role": "user", "content": "How much does this cost?\n\nAcme Filter\nFits most fridges."},
        {"role": "assistant", "content": "Price is $12.50"},
    ]
    assert messages_for(ITEMS[1], system="S")[2]["content"] == "Price is $0.99"


def test_written_lines_parse_back(tmp_path):
    path = tmp_path / "train.jsonl"
    assert write_chat_jsonl(ITEMS, path) == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"messages": messages_for(it)} for it in ITEMS]
    assert all(check_line(line)[0]["content"] == SYSTEM for line in lines)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("line, message", [
    ("{not json", "not a chat example"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "system, user, assistant"),
    ('{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, '
     '{"role": "assistant", "content": "about 12 dollars"}]}', "is not 'Price is \\$X.XX'"),
])
def test_check_line_rejects(line, message):
    with pytest.raises(DataError, match=message):
        check_line(line)


def test_cli(tmp_path, capsys):
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"title": f"t{i}", "text": f"t{i}\nbody", "price": i + 1.25}) + "\n"
                           for i in range(30)))
    out = tmp_path / "out.jsonl"
    assert main([str(src), str(out), "--split", "all", "--limit", "5"]) == 0
    assert len(out.read_text().splitlines()) == 5
    capsys.readouterr()
    assert main([str(tmp_path / "missing"), str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_module_entry_point(tmp_path):
    src = tmp_path / "items.jsonl"
    src.write_text(json.dumps({"title": "t", "text": "t\nbody", "price": 3}) + "\n")
    run = subprocess.run([sys.executable, "-m", "data.export", str(src), str(tmp_path / "o.jsonl"), "--split", "all"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "wrote 1 examples" in run.stdout
