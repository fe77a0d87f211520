"""The saga's database budget: statements and commits of one happy saga, step by step.

The figures may only go down. A change that needs more must say why, here and in the README
(*Saga speed*). Counted in the test's own thread, with the transport captured, so only the steps'
own work is seen (the fake gateway's and carrier's books included: they live in our database).
A statement is one execute, one round trip: a ``sql.Batch`` sends its writes as one.
"""

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from orders.saga import engine
from orders.saga import events as saga_events
from tests.factories import ProductFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)  # the fake gateway refuses to run inside a transaction

# step: (statements, commits)
BUDGET = {
    "reserve_inventory": (4, 2),
    "process_payment": (5, 3),
    "create_shipment": (5, 3),
    "send_confirmation": (7, 5),
}


class Counter:
    """Statements sent, and commits: explicit ones, and every statement run in autocommit (reads too)."""

    def __init__(self):
        self.statements = self.commits = 0

    def __call__(self, execute, sql, params, many, context):
        self.statements += 1
        if not connection.in_atomic_block:
            self.commits += 1
        return execute(sql, params, many, context)


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(saga_events, "dispatch", lambda saga_id, names: calls.append(names))
    return calls


def test_each_step_of_a_happy_saga_stays_within_its_statement_and_commit_budget(monkeypatch):
    order = place_order(products=[ProductFactory(on_hand=5)])
    wrapper = type(connections[DEFAULT_DB_ALIAS])
    real_commit, counting = wrapper.commit, []

    def commit(self):
        if counting:
            counting[-1].commits += 1
        return real_commit(self)

    monkeypatch.setattr(wrapper, "commit", commit)
    spent = {}
    for name in BUDGET:
        counting.append(Counter())
        with connection.execute_wrapper(counting[-1]):
            assert engine.run_forward(order.saga.pk, name, task_id="t") == engine.CONTINUE
        spent[name] = (counting[-1].statements, counting[-1].commits)

    order.refresh_from_db()
    assert order.status == "confirmed"
    assert spent == {name: spent[name] for name in BUDGET}  # every step measured
    over = {
        name: (spent[name], BUDGET[name])
        for name in BUDGET
        if spent[name][0] > BUDGET[name][0] or spent[name][1] > BUDGET[name][1]
    }
    assert not over, f"over budget (spent, budget): {over}"
    total = tuple(map(sum, zip(*spent.values(), strict=True)))
    assert total[0] <= 21 and total[1] <= 13, f"a saga took {total[0]} statements and {total[1]} commits"
