"""The live-chat human evaluation, fast tier: Mephisto's mock architect, no browser.

Workers are played through the mock architect's server (as ParlAI's own crowdsourcing
tests do) against a real tiny transfertransfo model; every test has its own Mephisto data
directory and ports chosen by the OS.
"""
import pytest

from crowd_helpers import MockRun, saved_conversations, wait_until

ANSWERS = [1, 2]  # task_config/onboarding.json's right answers


@pytest.fixture(scope="module")
def shared_models(tiny_transfertransfo_model, tmp_path_factory):
    """The model loaded once for the module's runs (as the launcher loads it once)."""
    from parlai_transfertransfo.crowdsourcing import environment
    from parlai_transfertransfo.crowdsourcing.model_chat import blueprint, run

    environment.use_data_dir(str(tmp_path_factory.mktemp("mephisto-load")))
    cfg = run.load_config([f"mephisto.blueprint.model_file={tiny_transfertransfo_model}"])
    names = blueprint.model_names([tiny_transfertransfo_model])
    return run.load_models(cfg, names)


@pytest.fixture
def mock_run(tmp_path, tiny_transfertransfo_model, shared_models):
    runs = []

    def start(*overrides):
        runs.append(MockRun(tmp_path / "mephisto", tiny_transfertransfo_model, shared_models, overrides))
        return runs[-1]

    yield start
    for r in runs:
        r.shutdown()


def final_answers(engagingness, fluency, consistency, persona_choice):
    ratings = {"engagingness": engagingness, "fluency": fluency, "consistency": consistency}
    return {"final_answers": {"ratings": ratings, "persona_choice": persona_choice}}


def test_a_worker_passes_onboarding_chats_n_turns_and_the_ratings_are_saved(mock_run):
    run = mock_run()
    worker = run.register("alice")
    run.onboard(worker, ANSWERS)
    agent = run.task_agent(worker)
    world_start = run._observed(agent, "worker_persona")[0]["task_data"]
    run.say(agent, "hi")  # too short: refused, never shown to the bot
    assert "at least 3 words" in run.last_from(agent, "Coordinator")
    run.say(agent, "hello there, how are you?")
    run.say(agent, "i like to read books a lot", {"annotations": {"none": True}})
    questions = wait_until(lambda: run._observed(agent, "final_questions"), 120, "the final questions")
    options = questions[-1]["task_data"]["final_questions"]["persona_options"]
    run.server.send_agent_act(agent.get_agent_id(), {"text": "", "task_data": final_answers(4, 2, 5, 1)})
    record = wait_until(lambda: saved_conversations(run.folder), 120, "the saved chat")[0]
    # the same record in Mephisto's database (the agent's saved state)
    world_data = wait_until(lambda: [m for m in agent.state.messages if "WORLD_DATA" in m], 120, "Mephisto's copy")
    assert world_data[-1]["WORLD_DATA"]["custom_data"] == record
    run.server.submit_mock_unit(agent.get_agent_id(), {})

    assert record["status"] == "complete"
    assert record["ratings"] == {"engagingness": 4, "fluency": 2, "consistency": 5}
    assert record["persona_choice"] == 1
    assert record["persona_correct"] == (record["bot_persona_index"] == 1)
    assert options[record["bot_persona_index"]] == record["bot_persona"]
    # the worker's persona is shown to them and is neither of the two options' bot persona
    assert world_start["worker_persona"] == record["worker_persona"] != record["bot_persona"]
    assert record["worker_persona"] not in options
    texts = [turn[0]["text"] for turn in record["dialog"]]
    assert texts[0::2] == ["hello there, how are you?", "i like to read books a lot"]
    assert len(texts) == 4 and all(texts[1::2])  # two real model replies
    assert record["dialog"][1][0]["annotations"] == {"none": True}
    # each chat's bot is a copy sharing the one loaded model (ParlAI's share())
    bot = run.worlds[0].bot.model_agent
    assert bot.model is run.shared[record["model"]]["model"]
    # ... and it read its persona (sent in ConvAI2's format with the first message)
    assert bot.history.persona == record["bot_persona"]


def test_a_worker_who_fails_onboarding_is_blocked_and_no_chat_is_saved(mock_run):
    run = mock_run()
    worker = run.register("bob")
    run.onboard(worker, [0, 0])
    wait_until(lambda: worker.is_disqualified("transfertransfo_convai2_chat_onboarding"), 120, "the block")
    assert not [a for a in run.db.find_agents() if a.worker_id == worker.db_id]
    assert saved_conversations(run.folder) == []


def test_a_disconnect_saves_the_partial_chat_as_incomplete_and_the_unit_goes_back(mock_run):
    run = mock_run()
    first = run.register("carol")
    run.onboard(first, ANSWERS)
    agent = run.task_agent(first)
    run.say(agent, "hello there, how are you?")
    run.server.disconnect_mock_agent(agent.get_agent_id())
    partial = wait_until(lambda: saved_conversations(run.folder), 120, "the partial chat")[0]
    assert partial["status"] == "incomplete" and partial["ratings"] is None
    assert partial["dialog"][0][0]["text"] == "hello there, how are you?"

    # the same unit is offered again and another worker completes it
    second = run.register("dave")
    run.onboard(second, ANSWERS)
    agent2 = run.task_agent(second)
    assert agent2.get_unit().db_id == agent.get_unit().db_id
    run.say(agent2, "good morning to you")
    run.say(agent2, "what do you do for fun?")
    run.server.send_agent_act(agent2.get_agent_id(), {"text": "", "task_data": final_answers(2, 3, 3, 0)})
    records = wait_until(lambda: len(saved_conversations(run.folder)) == 2 and saved_conversations(run.folder), 120, "two records")
    run.server.submit_mock_unit(agent2.get_agent_id(), {})
    assert [r["status"] for r in records] == ["incomplete", "complete"]

    from parlai_transfertransfo.crowdsourcing.model_chat.results import summarize

    rows = summarize(records)[0]
    assert rows[0]["conversations"] == 1 and rows[0]["incomplete (not counted)"] == 1
    assert rows[0]["engagingness"] == "2.00"  # the incomplete chat is never averaged


def test_final_answers_out_of_range_are_asked_again_and_acceptability_is_checked(mock_run):
    run = mock_run("mephisto.blueprint.num_turns=1", "mephisto.blueprint.check_acceptability=true")
    worker = run.register("erin")
    run.onboard(worker, ANSWERS)
    agent = run.task_agent(worker)
    run.say(agent, "what the hell, you shithead")
    wait_until(lambda: run._observed(agent, "final_questions"), 120, "the final questions")
    run.say(agent, "", final_answers(9, 2, 5, 0))  # engagingness is 1 to 4
    assert "from 1 to 4" in run.last_from(agent, "Coordinator")
    run.server.send_agent_act(agent.get_agent_id(), {"text": "", "task_data": final_answers(1, 1, 1, 0)})
    record = wait_until(lambda: saved_conversations(run.folder), 120, "the saved chat")[0]
    assert record["ratings"] == {"engagingness": 1, "fluency": 1, "consistency": 1}
    # ParlAI's acceptability checks, offline (packaged word list): the worker is soft-blocked
    assert record["acceptability_violations"] == "unsafe:1"
    assert wait_until(lambda: worker.is_qualified("transfertransfo_convai2_chat_block"), 120, "the soft block")


def test_several_models_get_distinct_names_and_the_one_most_needed_is_chosen():
    import threading

    from parlai_transfertransfo.crowdsourcing.model_chat import blueprint, run, worlds

    cfg = run.load_config(["mephisto.blueprint.model_file=[zoo:transfertransfo/smollm2_135m/model,/x/a/model,/y/a/model]"])
    names = blueprint.model_names(blueprint.listify(cfg.mephisto.blueprint.model_file))
    assert names == {"smollm2_135m": "zoo:transfertransfo/smollm2_135m/model", "a": "/x/a/model", "a_2": "/y/a/model"}
    opt = {"statistics_lock": threading.Lock(), "conversations_needed": {"smollm2_135m": 2, "a": 3, "a_2": 3},
           "run_statistics": {"a": 2}}
    assert worlds.choose_model(opt) == "a_2"
    opt["run_statistics"] = {"a": 2, "a_2": 2}
    assert worlds.choose_model(opt) == "smollm2_135m"


def test_personas_of_a_chat_are_three_different_training_personas():
    from parlai_transfertransfo.crowdsourcing.model_chat.blueprint import PersonaPairs
    from parlai_transfertransfo.data.personas import load_personas

    pairs = PersonaPairs(load_personas(), seed=3)
    seen_sides = set()
    for _ in range(20):
        c = pairs.next_context()
        bot, worker, options = c["bot_persona"], c["worker_persona"], c["persona_options"]
        assert options[c["bot_persona_index"]] == bot
        distractor = options[1 - c["bot_persona_index"]]
        assert len({tuple(bot), tuple(worker), tuple(distractor)}) == 3
        seen_sides.add(c["bot_persona_index"])
    assert seen_sides == {0, 1}  # the bot's persona is on either side
    assert PersonaPairs(load_personas(), seed=3).next_context() == PersonaPairs(load_personas(), seed=3).next_context()
