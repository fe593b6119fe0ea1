"""Personas for interactive chat come from the packaged training personas, offline."""
import random

import pytest

from parlai_transfertransfo.data import personas
from parlai_transfertransfo.errors import TransfertransfoError


def test_packaged_file_holds_the_17878_training_personas():
    loaded = personas.load_personas()
    assert len(loaded) == 17878
    assert loaded[0] == [
        "i like to remodel homes .",
        "i like to go hunting .",
        "i like to shoot a bow .",
        "my favorite holiday is halloween .",
    ]
    assert all(3 <= len(p) <= 5 for p in loaded)


def test_random_persona_is_reproducible_with_a_seeded_rng():
    first = personas.random_persona(random.Random(0))
    assert first == personas.random_persona(random.Random(0))
    assert first in personas.load_personas()
    assert first == [
        "i like to wear black .",
        "my favorite artist is guns and roses .",
        "i've a black purse .",
        "i like rock music .",
    ]


def test_default_persona_is_the_first_validation_bots():
    assert personas.persona_text(personas.DEFAULT_PERSONA) == (
        "your persona: i read twenty books a year.\n"
        "your persona: i'm a stunt double as my second job.\n"
        "your persona: i only eat kosher.\n"
        "your persona: i was raised in a single parent household."
    )


@pytest.mark.parametrize(
    "text",
    [
        "i love cats.|i am a nurse.",
        " i love cats. | i am a nurse. ",
        "your persona: i love cats.\nyour persona: i am a nurse.",
        "['i love cats.', 'i am a nurse.']",
        "i love cats.||i am a nurse.|",
    ],
)
def test_parse_persona_arg_accepts_the_usual_spellings(text):
    assert personas.parse_persona_arg(text) == ["i love cats.", "i am a nurse."]


@pytest.mark.parametrize("text", ["", " | ", "your persona:", "['i love cats.'", "[1, 2]"])
def test_parse_persona_arg_refuses_empty_or_broken_input(text):
    with pytest.raises(TransfertransfoError, match="persona"):
        personas.parse_persona_arg(text)


def test_a_malformed_personas_file_names_its_line(tmp_path):
    path = tmp_path / "personas.txt"
    path.write_text("['i like tea .', 'i have a cat .']\n['unclosed'\n")
    with pytest.raises(TransfertransfoError) as err:
        personas.load_personas(str(path))
    assert str(err.value) == f"{path}:2: not a Python list of sentences"
