"""The recipe's segments on a real ConvAI2 dialog, tokenized by GPT-2's real tokenizer.

The dialog is the first one of ConvAI2's `valid_self_original.txt` (ParlAI's FbDialog
format), copied here so the tests need no dataset.
"""
import pytest
from conftest import FIRST_TEXT, gpt2_tokenizer

from parlai_transfertransfo.recipe.segments import (
    ATTR_TO_SPECIAL_TOKEN, build_instance, build_prefix, distractors, IGNORE_INDEX, instance_length, recent_history, rotate_persona, SPECIAL_TOKENS, split_persona, truncate, SpecialIds,
)

LABEL_1 = "i am good , i just got off work and tired , i have two jobs ."
TEXT_2 = "i just got done watching a horror movie"
LABEL_2 = "i rather read , i've read about 20 books this year ."
# The last four of the label's 20 candidates (the gold reply is last).
CANDIDATES_1 = [
    "awesome ! i own 2 dogs , love them",
    "yes , my favorite is broccoli and tofu in a garlic sauce . yum !",
    "maybe he can skydive to see a better view",
    "i am good , i just got off work and tired , i have two jobs .",
]

BOS, EOS, PAD, SPEAKER1, SPEAKER2 = 50257, 50258, 50259, 50260, 50261
IDS = SpecialIds(bos=BOS, eos=EOS, speaker1=SPEAKER1, speaker2=SPEAKER2, pad=PAD)

# GPT-2's BPE of each sentence, as written.
READ = [72, 1100, 8208, 3835, 257, 614, 13]  # i read twenty books a year.
STUNT = [72, 1101, 257, 25756, 4274, 355, 616, 1218, 1693, 13]  # i'm a stunt double ...
HELLO = [31373, 644, 389, 1804, 1909, 5633]  # hello what are doing today ?
GOOD = [72, 716, 922, 837, 1312, 655, 1392, 572, 670, 290, 10032, 837, 1312, 423, 734, 3946, 764]
HORROR = [72, 655, 1392, 1760, 4964, 257, 9961, 3807]  # i just got done watching ...


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = gpt2_tokenizer()
    tokenizer.add_special_tokens(ATTR_TO_SPECIAL_TOKEN)
    return tokenizer


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_special_tokens_follow_gpt2_vocabulary_in_recipe_order(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert SpecialIds(*ids) == IDS


def test_split_persona_separates_persona_lines_from_first_utterance():
    persona, partner, utterances = split_persona(FIRST_TEXT)
    assert persona == [
        "i read twenty books a year.",
        "i'm a stunt double as my second job.",
        "i only eat kosher.",
        "i was raised in a single parent household.",
    ]
    assert partner == []
    assert utterances == ["hello what are doing today ?"]


def test_split_persona_keeps_partner_persona_apart():
    text = "your persona: i like cats.\npartner's persona: i have two dogs.\nhi !"
    assert split_persona(text) == (["i like cats."], ["i have two dogs."], ["hi !"])


def test_split_persona_of_a_later_turn_is_all_utterance():
    assert split_persona(TEXT_2) == ([], [], [TEXT_2])


def test_each_sentence_is_tokenized_as_written(tokenizer):
    assert encode(tokenizer, "i read twenty books a year.") == READ
    assert encode(tokenizer, "i'm a stunt double as my second job.") == STUNT
    assert encode(tokenizer, "hello what are doing today ?") == HELLO
    assert encode(tokenizer, LABEL_1) == GOOD
    assert encode(tokenizer, TEXT_2) == HORROR


def test_build_instance_matches_the_recipe_on_the_first_convai2_turn(tokenizer):
    persona = [encode(tokenizer, s) for s in split_persona(FIRST_TEXT)[0][:2]]
    history = [encode(tokenizer, "hello what are doing today ?")]
    reply = encode(tokenizer, LABEL_1)

    instance = build_instance(persona, history, reply, IDS)

    assert instance["input_ids"] == (
        [50257, 72, 1100, 8208, 3835, 257, 614, 13]  # <bos> i read twenty books a year.
        + [72, 1101, 257, 25756, 4274, 355, 616, 1218, 1693, 13]  # i'm a stunt double ...
        + [50261, 31373, 644, 389, 1804, 1909, 5633]  # <speaker2> hello what are doing today ?
        + [50260, 72, 716, 922, 837, 1312, 655, 1392, 572, 670, 290]  # <speaker1> i am good ...
        + [10032, 837, 1312, 423, 734, 3946, 764, 50258]  # ... tired , i have two jobs . <eos>
    )
    assert instance["token_type_ids"] == [50260] * 18 + [50261] * 7 + [50260] * 19
    assert instance["mc_token_ids"] == 43
    assert instance["lm_labels"] == (
        [-100] * 26
        + [72, 716, 922, 837, 1312, 655, 1392, 572, 670, 290]
        + [10032, 837, 1312, 423, 734, 3946, 764, 50258]
    )


def test_build_instance_of_a_distractor_has_no_lm_labels():
    instance = build_instance([READ], [HELLO], [72, 716], IDS, lm_labels=False)
    assert instance["input_ids"] == [BOS, *READ, SPEAKER2, *HELLO, SPEAKER1, 72, 716, EOS]
    assert instance["lm_labels"] == [IGNORE_INDEX] * 19
    assert instance["mc_token_ids"] == 18


def test_build_instance_without_eos_ends_on_the_reply():
    instance = build_instance([READ], [HELLO], [72, 716], IDS, with_eos=False)
    assert instance["input_ids"][-3:] == [SPEAKER1, 72, 716]
    assert instance["lm_labels"][-3:] == [-100, 72, 716]
    assert instance["mc_token_ids"] == 17


def test_speakers_count_back_from_reply_and_token_types_count_forward():
    # Three history turns: partner, self, partner; then our reply.
    instance = build_instance([READ], [[1], [2], [3]], [4], IDS)
    assert instance["input_ids"] == [
        BOS, *READ, SPEAKER2, 1, SPEAKER1, 2, SPEAKER2, 3, SPEAKER1, 4, EOS
    ]
    assert instance["token_type_ids"] == (
        [SPEAKER1] * 8 + [SPEAKER2] * 2 + [SPEAKER1] * 2 + [SPEAKER2] * 2 + [SPEAKER1] * 3
    )
    # With an even history the recipe's two counts disagree on the reply's type.
    instance = build_instance([READ], [[2], [3]], [4], IDS)
    assert instance["input_ids"][8:] == [SPEAKER1, 2, SPEAKER2, 3, SPEAKER1, 4, EOS]
    assert instance["token_type_ids"][8:] == [SPEAKER2] * 2 + [SPEAKER1] * 2 + [SPEAKER2] * 3


@pytest.mark.parametrize("n_history", [0, 1, 2, 3, 4])
def test_build_prefix_is_the_instance_up_to_the_reply_speaker(n_history):
    persona = [READ, STUNT]
    history = [HELLO, GOOD, HORROR, HELLO][:n_history]
    input_ids, token_type_ids, reply_type = build_prefix(persona, history, IDS)
    for reply in ([], [72], GOOD):
        instance = build_instance(persona, history, reply, IDS)
        cut = len(instance["input_ids"]) - len(reply) - 2  # <speaker1> reply <eos>
        assert instance["input_ids"][:cut] == input_ids
        assert instance["token_type_ids"][:cut] == token_type_ids
        assert instance["input_ids"][cut] == SPEAKER1
        assert instance["token_type_ids"][cut:] == [reply_type] * (len(reply) + 2)


def test_build_prefix_of_the_first_turn():
    assert build_prefix([READ], [HELLO], IDS) == (
        [BOS, *READ, SPEAKER2, *HELLO],
        [SPEAKER1] * 8 + [SPEAKER2] * 7,
        SPEAKER1,
    )


def test_recent_history_keeps_last_exchanges_and_partner_turn():
    history = ["a", "b", "c", "d", "e", "f", "g"]
    assert recent_history(history, 2) == ["c", "d", "e", "f", "g"]
    assert recent_history(history, 0) == ["g"]
    assert recent_history(history, 5) == history


def test_instance_length_counts_what_build_instance_builds():
    instance = build_instance([READ, STUNT], [HELLO, GOOD, HORROR], GOOD, IDS)
    assert instance_length([READ, STUNT], [HELLO, GOOD, HORROR], GOOD) == len(instance["input_ids"])


def test_truncate_leaves_a_fitting_instance_alone():
    assert truncate([READ, STUNT], [HELLO], GOOD, 44) == ([READ, STUNT], [HELLO], GOOD, [])


def test_truncate_drops_oldest_exchange_first_without_a_note():
    # 1 + 17 persona + 7 + 18 + 9 history + 14 reply = 66 tokens.
    persona, history, reply, notes = truncate([READ, STUNT], [HELLO, GOOD, HORROR], GOOD[:12], 65)
    assert (persona, history, reply, notes) == ([READ, STUNT], [HORROR], GOOD[:12], [])


def test_truncate_then_drops_persona_from_the_end():
    # Only the last history turn left: 1 + 17 + 9 + 19 = 46 tokens.
    persona, history, reply, notes = truncate([READ, STUNT], [HELLO, GOOD, HORROR], GOOD, 45)
    assert (persona, history, reply) == ([READ], [HORROR], GOOD)
    assert notes == ["dropped 1 persona sentence(s) to fit 45 tokens"]


def test_truncate_cuts_an_overlong_utterance_keeping_its_last_tokens():
    # Nothing but <bos>, the utterance (with its speaker) and the reply (with <speaker1> and <eos>).
    persona, history, reply, notes = truncate([READ], [GOOD], [72, 716], 10)
    assert (persona, history, reply) == ([], [[423, 734, 3946, 764]], [72, 716])
    assert notes == [
        "dropped 1 persona sentence(s) to fit 10 tokens",
        "cut a history utterance from 17 to its last 4 tokens to fit 10",
    ]
    assert instance_length(persona, history, reply) == 10


def test_truncate_cuts_an_overlong_reply_keeping_its_first_tokens_and_eos():
    persona, history, reply, notes = truncate([], [HELLO], GOOD, 16)
    assert (history, reply) == ([HELLO], GOOD[:6])
    assert notes == ["cut the reply from 17 to 6 tokens to fit 16"]
    instance = build_instance(persona, history, reply, IDS)
    assert len(instance["input_ids"]) == 16 and instance["input_ids"][-1] == EOS


def test_truncate_shares_the_room_when_both_utterance_and_reply_are_long():
    persona, history, reply, notes = truncate([], [GOOD], GOOD, 14)
    assert (history, reply) == ([GOOD[-5:]], GOOD[:5])
    assert len(notes) == 2


@pytest.mark.parametrize("max_len", [3, 4, 5, 6, 9, 20, 33, 50, 80])
def test_truncated_instance_and_prefix_never_exceed_max_len(max_len):
    persona, history, reply, _ = truncate([READ, STUNT], [HELLO, GOOD, HORROR], GOOD, max_len)
    instance = build_instance(persona, history, reply, IDS)
    assert len(instance["input_ids"]) <= max_len
    assert instance["input_ids"][-1] == EOS
    assert len(build_prefix(persona, history, IDS)[0]) + 2 <= max_len


def test_rotate_persona_moves_last_sentence_first():
    persona = ["a", "b", "c", "d"]
    assert rotate_persona(persona, 0) == ["a", "b", "c", "d"]
    assert rotate_persona(persona, 1) == ["d", "a", "b", "c"]
    assert rotate_persona(persona, 2) == ["c", "d", "a", "b"]
    assert rotate_persona(persona, 4) == persona
    assert persona == ["a", "b", "c", "d"]


def test_distractors_are_the_candidates_just_before_the_gold_reply():
    assert distractors(LABEL_1, CANDIDATES_1, 1) == ["maybe he can skydive to see a better view"]
    assert distractors(LABEL_1, CANDIDATES_1, 2) == [
        "yes , my favorite is broccoli and tofu in a garlic sauce . yum !",
        "maybe he can skydive to see a better view",
    ]
    assert distractors(LABEL_1, CANDIDATES_1, 10) == CANDIDATES_1[:3]
    assert distractors(LABEL_1, CANDIDATES_1, 0) == []
    assert distractors(LABEL_1, [LABEL_1], 3) == []
