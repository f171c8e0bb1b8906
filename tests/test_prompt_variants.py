"""Per-voter prompt variants: what each voter reads (swarm/prompt_variants.py) and how the llama.cpp
backend plans their tails (models/llamacpp/variants.py). Plain Python; the real decoding is tested in
test_llamacpp.py and test_swarm.py."""

from __future__ import annotations

from swarm_lsp.models.base import GenerationRequest, Message
from swarm_lsp.models.llamacpp.variants import plan_tails, variant_prompts
from swarm_lsp.swarm.context import ContextPack, ContextPiece
from swarm_lsp.swarm.prompt_variants import HINTS, ORDER_PIECES, context_pieces, voter_variants
from swarm_lsp.swarm.prompts import build_messages
from swarm_lsp.swarm.tasks import Task, TextRange

PIECES = [
    ContextPiece(
        "web/routing.py", 4, 9, "def match_route(routes, path):\n    return None", "match_route", "match"
    ),
    ContextPiece("web/app.py", 1, 3, "class App:\n    pass", "App", "match"),
    ContextPiece("geometry/shapes.py", 10, 12, "def area(self):\n    return 1", None, "match"),
]
CONTEXT = ContextPack("q", PIECES).render()


def ask(prompt: str = "Which file defines match_route?") -> tuple[Task, list[Message]]:
    task = Task(kind="ask", prompt=prompt)
    return task, build_messages(task, CONTEXT, context_citations=[p.citation for p in PIECES])


def test_voters_after_the_first_read_their_own_ending_of_the_same_prompt():
    task, messages = ask()
    variants = voter_variants(task, messages, CONTEXT, 5)
    assert sorted(variants) == [1, 2, 3, 4]  # voter 0 reads the prompt as built
    for voter, variant in variants.items():
        # Everything but the last message is shared, so the backend evaluates it once.
        assert variant[:-1] == messages[:-1]
        last = variant[-1]
        assert last.role == "user"
        assert messages[-1].content in last.content  # the question, as built
        assert HINTS[(voter - 1) % len(HINTS)] in last.content
    # The top pieces in another order per voter: each starts one piece further down, wrapping around.
    orders = [variants[v][-1].content.split("\n", 1)[0] for v in (1, 2, 3, 4)]
    routing, app, shapes = (
        "web/routing.py:4-9 (match_route)",
        "web/app.py:1-3 (App)",
        "geometry/shapes.py:10-12",
    )
    prefix = "The context pieces, in the order to check them: "
    assert orders == [
        f"{prefix}{routing}; {app}; {shapes}",
        f"{prefix}{app}; {shapes}; {routing}",
        f"{prefix}{shapes}; {routing}; {app}",
        f"{prefix}{routing}; {app}; {shapes}",
    ]
    assert len({variants[v][-1].content for v in variants}) == 4
    # The context is not reordered (it stays in the shared system message), nor repeated.
    assert all("def match_route" not in variants[v][-1].content for v in variants)


def test_at_most_the_top_pieces_are_ordered():
    pieces = [ContextPiece(f"m{n}.py", 1, 2, "x = 1", None, "match") for n in range(ORDER_PIECES + 3)]
    many = ContextPack("q", pieces).render()
    task, messages = ask()
    variant = voter_variants(task, messages, many, 2)[1][-1].content
    assert variant.split("\n", 1)[0].count(".py:") == ORDER_PIECES


def test_only_questions_over_the_workspace_get_variants():
    task, messages = ask()
    assert voter_variants(task, messages, CONTEXT, 1) == {}
    plain = Task(kind="chat", prompt="hello", grounded=False)
    assert voter_variants(plain, build_messages(plain, ""), "", 3) == {}
    code = Task(
        kind="refactor",
        prompt="rename",
        path="a.py",
        file_text="x = 1\n",
        range=TextRange(1, 1),
    )
    assert voter_variants(code, build_messages(code, CONTEXT), CONTEXT, 3) == {}


def test_without_context_the_variants_differ_by_their_hint_only():
    task, messages = ask()
    variants = voter_variants(task, messages, "", 3)
    assert [v[-1].content for v in variants.values()] == [
        f"{messages[-1].content}\n{HINTS[0]}",
        f"{messages[-1].content}\n{HINTS[1]}",
    ]


def test_pieces_are_read_back_from_the_rendered_context():
    assert [piece.split("\n", 1)[0] for piece in context_pieces(CONTEXT)] == [
        f"{p.citation}" + (f" ({p.symbol})" if p.symbol else "") for p in PIECES
    ]
    assert context_pieces("") == [] and context_pieces("some summary") == []


def test_the_backend_plans_one_tail_per_variant_after_the_common_prefix():
    shared = [1, 2, 3, 4, 5, 6]
    prompts = {1: [1, 2, 3, 9, 9], 2: [1, 2, 3, 4, 5, 6, 7], 3: [1, 2, 3, 4, 5]}
    tails = plan_tails(prompts, shared, [0, 1, 2, 3], free_cells=100)
    assert {seq: (t.start, t.tokens) for seq, t in tails.items()} == {
        1: (3, [9, 9]),
        2: (6, [7]),
        3: (4, [5]),  # a prefix of the shared prompt: its last token is evaluated for its logits
    }
    assert all(t.prompt_length == len(prompts[t.seq_id]) for t in tails.values())


def test_sequence_zero_and_tails_beyond_the_free_cells_read_the_shared_prompt():
    shared = [1, 2, 3]
    prompts = {0: [1, 7, 7], 5: [1, 2, 8, 8, 8], 6: [1, 2, 9]}
    # Candidate 0 decodes in sequence 0, which must keep the shared prompt: no tail.
    tails = plan_tails(prompts, shared, [0, 5, 6], free_cells=3)
    assert sorted(tails) == [1]  # candidate 5's tail (3 cells) fits, candidate 6's does not
    assert tails[1].tokens == [8, 8, 8]
    # In a later wave, candidate 5 comes first: sequence 0, shared prompt.
    assert sorted(plan_tails(prompts, shared, [5, 6], free_cells=3)) == [1]


def test_variants_that_equal_the_prompt_or_overflow_the_window_are_dropped():
    base = [Message("user", "hi")]
    request = GenerationRequest(
        messages=base,
        n=4,
        max_tokens=4,
        variants=[None, base, [Message("user", "long")], [Message("user", "x")]],
    )

    def tokens_of(messages):
        return {"hi": [1, 2], "long": [1] * 20, "x": [1, 3]}[messages[-1].content]

    assert variant_prompts(request, [1, 2], tokens_of, window=10) == {3: [1, 3]}


def test_a_request_checks_its_variants():
    base = [Message("user", "hi")]
    for wrong in ({"n": 2, "variants": [None]}, {"prompt": "x", "messages": [], "variants": [None]}):
        try:
            GenerationRequest(**{"messages": base, **wrong})
        except ValueError as error:
            assert "variants" in str(error)
        else:
            raise AssertionError(f"{wrong} was accepted")
