"""The runtime's free-text question tokeniser (`caeav.runtime.question`, rule in `caeav.data.questions`) against the
training loader's (`AVQAVocab.encode_question`), and the `--questions` file formats. Torch-free, about a second."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from caeav.data.annotations import load_avqa_questions, load_avqa_vocab
from caeav.errors import BundleError, CaeavError
from caeav.runtime.bundle import Bundle
from caeav.runtime.question import QuestionEncoder, questions_for, read_questions_file


def vocab_bundle(path: Path, **extra) -> Bundle:
    """A bundle object whose postprocess.json holds what `caeav export` writes for AVQA (see test_runtime_avqa)."""
    vocab = load_avqa_vocab()
    pp = {"task": "avqa", "answers": list(vocab.answers), "question_vocab": list(vocab.questions),
          "question_length": 14, "question_pad": "<pad>", "question_pads": "leading", **extra}
    return Bundle(path, {"task": "avqa"}, pp)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return QuestionEncoder.from_bundle(vocab_bundle(tmp_path_factory.mktemp("b")))


def filled(q) -> str:
    """The question as a person would type it: the template with its placeholders filled, question mark kept."""
    values = iter(q.templ_values)
    return re.sub(r"<[^>]*>", lambda _: next(values), q.template)


@pytest.mark.parametrize("split", ["test", "val"])
def test_runtime_tokens_equal_the_training_loader_on_every_question(encoder, split):
    vocab = load_avqa_vocab()
    questions = load_avqa_questions(split)
    assert len(questions) > 4000
    for q in questions:
        ids, warnings = encoder.encode(filled(q))
        assert warnings == [], (q.question_id, warnings)
        np.testing.assert_array_equal(ids, vocab.encode_question(q), err_msg=f"question {q.question_id}")
        assert ids.dtype == np.int64 and ids.shape == (14,)


def test_how_people_type_maps_to_the_training_form(encoder):
    canonical, _ = encoder.encode("Is the acoustic_guitar louder than the piano?")
    for typed in ("is the acoustic guitar louder than the piano", "IS THE ACOUSTIC-GUITAR LOUDER THAN THE PIANO ?",
                  "  Is the Acoustic Guitar louder than the piano？ ",
                  "Is the acoustic guitar, louder than the piano!"):
        ids, warnings = encoder.encode(typed)
        assert warnings == [] and ids.tolist() == canonical.tolist(), typed
    vocab = encoder.vocab.words
    assert [vocab[i] for i in canonical[:2]] == ["Is", "the"]  # first word capitalised as in MUSIC-AVQA


def test_unknown_words_are_left_out_with_a_warning(encoder):
    q = encoder.question("Hey, is the violin playing in tune?")
    assert q.tokens == ["Is", "the", "violin", "playing", "in"]  # "Is": the first word the model knows
    assert len(q.warnings) == 1 and "Hey" in q.warnings[0] and "tune" in q.warnings[0]
    assert q.ids.tolist()[:5] == [encoder.vocab.words.index(t) for t in q.tokens] and q.ids[5:].tolist() == [0] * 9


def test_too_long_questions_keep_the_first_14_tokens(encoder):
    text = "How many instruments are sounding in the video " * 2
    q = encoder.question(text)
    assert len(q.tokens) == 14 and q.tokens[-1] == "in"
    assert len(q.warnings) == 1 and "16 words" in q.warnings[0] and "at most 14" in q.warnings[0]
    assert 0 not in q.ids.tolist()


@pytest.mark.parametrize("text, reason", [("", "empty"), ("   ?! ", "empty"), ("Quel est le tempo", "no word")])
def test_a_question_without_known_words_is_not_asked(encoder, text, reason):
    q = encoder.question(text)
    assert q.ids is None and q.tokens == [] and reason in q.warnings[-1] and "not answered" in q.warnings[-1]
    ids, warnings = encoder.encode(text)
    assert ids.tolist() == [0] * 14 and not encoder.vocab.known(ids) and warnings


def test_a_bundle_without_vocabulary_is_one_line(tmp_path):
    with pytest.raises(BundleError, match="no question vocabulary.*re-export") as err:
        QuestionEncoder.from_bundle(Bundle(tmp_path, {"task": "avqa"}, {"answers": ["yes"]}))
    assert "\n" not in str(err.value)
    with pytest.raises(BundleError, match="unusable question vocabulary"):
        QuestionEncoder.from_bundle(vocab_bundle(tmp_path, question_pad="<nothing>"))


def test_questions_files_plain_and_jsonl(tmp_path):
    plain = tmp_path / "q.txt"
    plain.write_text("\ufeff# my questions\nIs the violin louder?\n\nHow many instruments are sounding?\n")
    assert read_questions_file(plain) == [(None, "Is the violin louder?"), (None, "How many instruments are sounding?")]
    clip = tmp_path / "clips" / "a.mp4"
    jsonl = tmp_path / "q.jsonl"
    rows = [{"video": "a", "question": "by stem?"}, {"video": "a.mp4", "question": "by name?"},
            {"video": str(clip), "question": "by full path?"}, {"video": "clips/a.mp4", "question": "relative?"},
            {"video": "b.mp4", "question": "another video?"}, {"question": "every video?"}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    texts, warnings = questions_for(["from the command line?"], jsonl, clip)
    assert texts == ["from the command line?", "by stem?", "by name?", "by full path?", "relative?", "every video?"]
    assert warnings == []
    jsonl.write_text(json.dumps({"video": "b.mp4", "question": "only b?"}) + "\n")
    texts, warnings = questions_for([], jsonl, clip)
    assert texts == [] and len(warnings) == 1 and "asks nothing of this video" in warnings[0]


@pytest.mark.parametrize("text, pattern", [
    ('{"video": "a.mp4", "question": "ok?"}\n{"video": "a.mp4"\n', r"q\.jsonl:2: not valid JSON"),
    ('{"video": "a.mp4", "text": "no question key"}\n', 'expected an object with a "question" string'),
    ('{"video": 3, "question": "ok?"}\n', '"video" must be a string'),
    ("\n# nothing\n", "holds no question"),
])
def test_bad_questions_files_are_one_line(tmp_path, text, pattern):
    path = tmp_path / "q.jsonl"
    path.write_text(text)
    with pytest.raises(CaeavError, match=pattern) as err:
        read_questions_file(path)
    assert "\n" not in str(err.value)
    with pytest.raises(CaeavError, match="no such file"):
        read_questions_file(tmp_path / "missing.txt")
