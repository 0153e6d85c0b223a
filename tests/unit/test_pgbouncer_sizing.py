"""Pool sizing arithmetic: computed sizes, and refusals that show the arithmetic."""

from __future__ import annotations

import pytest

from opsdb.errors import ConfigError
from opsdb.model.pgbouncer import DatabasePools, ServerLimits, SizingRequest, fd_estimate, plan_pools


def _req(**kw):
    base = dict(
        limits=ServerLimits(max_connections=100, superuser_reserved_connections=3),
        databases=(DatabasePools("app"), DatabasePools("reports")),
        users=2,
        instances=2,
        server_reserve=5,
    )
    base.update(kw)
    return SizingRequest(**base)


def test_computed_sizes_fit_the_server():
    plan = plan_pools(_req())
    # 100 - 3 - 5 = 92 usable; 46 per instance; 46 // (2 dbs * 2 users) = 11
    assert plan.usable == 92
    assert plan.per_instance == 46
    assert plan.default_pool_size == 11
    assert plan.max_db_connections == 23
    assert plan.worst_case_total == 2 * (22 + 22)
    assert plan.worst_case_total <= plan.usable
    assert any("usable = 100 max_connections - 3 superuser_reserved_connections" in line for line in plan.explanation)


def test_reserve_pool_is_taken_from_the_pool_share():
    plan = plan_pools(_req(reserve_pool_size=3))
    assert plan.default_pool_size == 8
    assert all(d.worst_case == 22 for d in plan.databases)


def test_pg16_reserved_connections_are_subtracted():
    plan = plan_pools(_req(limits=ServerLimits(100, 3, reserved_connections=10)))
    assert plan.usable == 82


def test_refuses_configured_pools_that_exceed_the_server_with_arithmetic():
    with pytest.raises(ConfigError) as err:
        plan_pools(_req(default_pool_size=50, max_db_connections=0))
    message = str(err.value)
    assert err.value.exit_code == 2
    assert "can open 400 server connections but the server accepts 92" in message
    assert "100 max_connections - 3 superuser_reserved_connections - 5 server_reserve = 92" in message
    assert "(100 app + 100 reports) * 2 instances = 400" in message


def test_max_db_connections_caps_large_pools():
    plan = plan_pools(_req(default_pool_size=50))
    assert plan.max_db_connections == 23
    assert plan.worst_case_total == 92


def test_refuses_more_pools_than_connections():
    with pytest.raises(ConfigError, match="more pools than server connections"):
        plan_pools(_req(limits=ServerLimits(20, 3), users=10))


def test_refuses_when_nothing_is_left():
    with pytest.raises(ConfigError, match="no server connections left"):
        plan_pools(_req(limits=ServerLimits(8, 3)))


def test_unknown_users_need_a_database_cap():
    plan = plan_pools(_req(users=None))
    assert plan.worst_case_total <= plan.usable
    with pytest.raises(ConfigError, match="unbounded"):
        plan_pools(_req(users=None, max_db_connections=0))


def test_per_database_override_counts():
    dbs = (DatabasePools("app", pool_size=40, max_db_connections=40), DatabasePools("reports"))
    with pytest.raises(ConfigError, match="40 app"):
        plan_pools(_req(databases=dbs))


def test_min_pool_size_must_fit():
    with pytest.raises(ConfigError, match="min_pool_size"):
        plan_pools(_req(min_pool_size=30))


def test_no_databases_is_a_usage_error():
    with pytest.raises(ConfigError, match="no databases"):
        plan_pools(_req(databases=()))


def test_fd_estimate():
    plan = plan_pools(_req())
    assert fd_estimate(1000, plan) == 1000 + 44


def test_max_user_connections_caps_the_worst_case_and_rescues_a_refusal():
    # 2 users * (30 + 0) per database, 2 databases, 2 instances = 240 > 92 usable without the cap
    over = dict(default_pool_size=30, max_db_connections=0)
    with pytest.raises(ConfigError, match="= 240"):
        plan_pools(_req(**over))
    plan = plan_pools(_req(**over, max_user_connections=20))
    # each of the 2 users may hold 20 server connections over all databases: 40 per instance
    assert plan.worst_case_total == 2 * 40
    assert "users cap = 2 users * 20 max_user_connections = 40 per instance" in plan.explanation
    assert any(
        line.startswith("worst case = min((60 app + 60 reports), 40 users cap) * 2 instances = 80")
        for line in plan.explanation
    )
    # a cap above the pools changes nothing; with unknown users it bounds nothing
    assert plan_pools(_req(max_user_connections=1000)).worst_case_total == plan_pools(_req()).worst_case_total
    assert (
        plan_pools(_req(users=None, max_user_connections=1)).worst_case_total
        == plan_pools(_req(users=None)).worst_case_total
    )
    with pytest.raises(ConfigError, match=r"min\(\(60 app \+ 60 reports\), 50 users cap\) \* 2 instances = 100"):
        plan_pools(_req(**over, max_user_connections=25))
