"""Prefetch: token expansion (STU2 grammar + today()), and the present / null / OperationOutcome / absent
states of each key, resolved against a real loopback HTTP server that records what the service asked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from cds_service.engine.knowledge import load_knowledge
from cds_service.errors import PrefetchUnavailable
from cds_service.hooks.prefetch import FetchEnvironment, KeyState, classify, fallback_query, resolve
from cds_service.hooks.prefetch_tokens import MissingTokenValue, TokenError, check_template, expand
from cds_service.hooks.request import HookRequest
from cds_service.hooks.services import PrefetchTemplate, ServiceDefinition, build_registry
from cds_service.web.security import dev_fhir_server_policy, https_only_policy
from tests.cds_helpers import searchset
from tests.loopback_http import LoopbackServer, Reply, Seen

AT = datetime(2026, 3, 11, 9, 30, tzinfo=UTC)
TODAY = date(2026, 3, 11)
CONTEXT = {"patientId": "p1", "userId": "Practitioner/dr-7", "encounterId": "e-9", "count": 3, "flag": True}
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
_SCREENING = build_registry(load_knowledge()).find("iec-hs-screening", "patient-view")
assert _SCREENING is not None
SCREENING = _SCREENING
assert SCREENING is not None


# ------------------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Patient/{{context.patientId}}", "Patient/p1"),
        ("Encounter/{{ context.encounterId }}", "Encounter/e-9"),
        ("{{context.userId}}", "Practitioner/dr-7"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/dr-7"),
        (
            "Observation?patient={{context.patientId}}&_count={{context.count}}",
            "Observation?patient=p1&_count=3",
        ),
        ("X?flag={{context.flag}}", "X?flag=true"),
        ("Observation?date=ge{{today()}}", "Observation?date=ge2026-03-11"),
        ("Observation?date=ge{{today() - 90 days}}", "Observation?date=ge2025-12-11"),
        ("Observation?date=le{{today()+1 day}}", "Observation?date=le2026-03-12"),
        ("Condition?patient={{context.patientId}}", "Condition?patient=p1"),
    ],
)
def test_tokens_expand(template: str, expected: str) -> None:
    assert expand(template, CONTEXT, TODAY) == expected


@pytest.mark.parametrize(
    "template",
    [
        "MedicationRequest/{{context.draftOrders.entry.resource.ofType(MedicationRequest).id}}",
        "Observation?patient={{%patient.id}}",
        "Patient/{{patientId}}",
        "Patient/{{context.patientId}",
        "Observation?date=ge{{today() - 3 months}}",
        "Observation?date=ge{{now()}}",
    ],
)
def test_tokens_outside_the_grammar_are_rejected(template: str) -> None:
    with pytest.raises(TokenError):
        check_template(template)


@pytest.mark.parametrize(
    ("template", "context"),
    [
        ("Practitioner/{{userPractitionerRoleId}}", CONTEXT),  # userId is a Practitioner, not a role
        ("Patient/{{userPatientId}}", {"userId": "Practitioner/x"}),
        ("Encounter/{{context.encounterId}}", {"patientId": "p1"}),  # optional field not sent
        ("X?q={{context.selections}}", {"selections": ["MedicationRequest/1"]}),  # not a primitive
        ("X?q={{context.patientId}}", {"patientId": ""}),
        ("Patient/{{context.patientId}}", {"patientId": ".."}),  # would change the path
    ],
)
def test_tokens_without_a_value_cannot_expand(template: str, context: dict[str, Any]) -> None:
    with pytest.raises(MissingTokenValue):
        expand(template, context, TODAY)


def test_values_are_percent_encoded() -> None:
    expanded = expand("X?patient={{context.patientId}}&a=1", {"patientId": "a&b=c #d"}, TODAY)
    assert expanded == "X?patient=a%26b%3Dc%20%23d&a=1"


@given(st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True).filter(lambda s: s not in {".", ".."}))
def test_any_fhir_id_expands_verbatim(fhir_id: str) -> None:
    assert expand("Patient/{{context.patientId}}", {"patientId": fhir_id}, TODAY) == f"Patient/{fhir_id}"


@given(st.text(min_size=1).filter(lambda s: "/" not in s and s not in {".", ".."}))
def test_no_value_can_inject_query_syntax(value: str) -> None:
    expanded = expand("X?a={{context.v}}", {"v": value}, TODAY)
    tail = expanded.removeprefix("X?a=")
    assert not set("&#? ") & set(tail)
    assert unquote(tail) == value


def test_today_follows_the_utc_date_of_the_instant() -> None:
    template = PrefetchTemplate("obs", "Observation?patient={{context.patientId}}&date=ge{{today() - 1 day}}")
    late_evening = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    assert fallback_query(template, CONTEXT, late_evening, 60).endswith("date=ge2026-03-09")


def test_the_fallback_adds_a_date_window_to_observation_searches() -> None:
    observations = SCREENING.template("observations")
    query = fallback_query(observations, CONTEXT, AT, 60)
    assert query.endswith("&date=ge2026-01-10")
    assert "_sort=-date" in query and query.startswith("Observation?patient=p1&code=http://loinc.org|")
    assert fallback_query(SCREENING.template("conditions"), CONTEXT, AT, 60) == "Condition?patient=p1"
    own = PrefetchTemplate(
        "o", "Observation?patient={{context.patientId}}&date=ge2020-01-01", fallback_date_param="date"
    )
    assert fallback_query(own, CONTEXT, AT, 60) == "Observation?patient=p1&date=ge2020-01-01"


# ------------------------------------------------------------------------------------------ states


def test_key_states() -> None:
    prefetch = {"a": {"resourceType": "Patient"}, "b": None, "c": OUTCOME, "d": searchset([])}
    assert classify(prefetch, "a") is KeyState.PRESENT
    assert classify(prefetch, "b") is KeyState.NULL
    assert classify(prefetch, "c") is KeyState.OPERATION_OUTCOME
    assert classify(prefetch, "d") is KeyState.PRESENT  # an empty Bundle is data: "nothing found"
    assert classify(prefetch, "e") is KeyState.ABSENT


class FakeFhir:
    """Answers like a FHIR server: the Patient, and one-entry searchsets for every search."""

    def __call__(self, seen: Seen) -> Reply:
        if seen.path == "/fhir/Patient/p1":
            return Reply(body={"resourceType": "Patient", "id": "p1"})
        if seen.path == "/fhir/Patient/gone":
            return Reply(status=404, body=OUTCOME)
        if seen.path == "/fhir/Observation" and "_offset" in seen.query:
            return Reply(body=searchset([{"resourceType": "Observation", "id": "page2"}]))
        rtype = seen.path.rsplit("/", 1)[-1]
        return Reply(body=searchset([{"resourceType": rtype, "id": f"{rtype}-from-server"}]))


@pytest.fixture
def fhir() -> Iterator[LoopbackServer]:
    with LoopbackServer(FakeFhir()) as server:
        yield server


def environment(*, dev: bool = False, timeout: float = 1.0, max_pages: int = 10) -> FetchEnvironment:
    session = requests.Session()
    session.trust_env = False
    policy = dev_fhir_server_policy if dev else https_only_policy
    return FetchEnvironment(
        session, policy, allow_anonymous=dev, timeout_s=timeout, max_pages=max_pages, lookback_days=60
    )


def request_for(
    prefetch: dict[str, Any],
    server: LoopbackServer | None = None,
    token: str | None = "tok-1",
    patient: str = "p1",
) -> HookRequest:
    return HookRequest(
        service_id="iec-hs-screening",
        hook="patient-view",
        hook_instance="h1",
        context={"patientId": patient, "userId": "Practitioner/dr-7"},
        prefetch=prefetch,
        fhir_server=f"{server.base_url}/fhir" if server else None,
        access_token=token if server else None,
    )


def complete_prefetch() -> dict[str, Any]:
    return {
        "patient": {"resourceType": "Patient", "id": "p1"},
        "observations": searchset([{"resourceType": "Observation", "id": "o1"}]),
        "conditions": searchset([]),
        "procedures": searchset([]),
        "medicationAdministrations": searchset([]),
        "medicationRequests": searchset([]),
    }


def soon(seconds: float = 2.0) -> float:
    return time.monotonic() + seconds


def test_present_keys_are_used_as_given(fhir: LoopbackServer) -> None:
    resolved = resolve(request_for(complete_prefetch(), fhir), SCREENING, environment(dev=True), AT, soon())
    assert resolved.data == complete_prefetch()
    assert resolved.gaps == ()
    assert set(resolved.sources.values()) == {"prefetch"}
    assert fhir.seen == []


def test_null_means_no_data_and_is_not_requeried(fhir: LoopbackServer) -> None:
    prefetch = {**complete_prefetch(), "conditions": None, "observations": None}
    resolved = resolve(request_for(prefetch, fhir), SCREENING, environment(dev=True), AT, soon())
    assert resolved.data["conditions"] is None and resolved.data["observations"] is None
    assert resolved.gaps == ()
    assert resolved.sources["observations"] == "null"
    assert fhir.seen == []


def test_null_needs_no_fhir_server_even_for_required_keys() -> None:
    prefetch = {key: None for key in complete_prefetch()}
    resolved = resolve(request_for(prefetch), SCREENING, environment(), AT, soon())
    assert resolved.gaps == () and all(value is None for value in resolved.data.values())


def test_operation_outcome_is_requeried(fhir: LoopbackServer) -> None:
    prefetch = {**complete_prefetch(), "conditions": OUTCOME}
    resolved = resolve(request_for(prefetch, fhir), SCREENING, environment(dev=True), AT, soon())
    assert resolved.data["conditions"]["entry"][0]["resource"]["id"] == "Condition-from-server"
    assert resolved.sources["conditions"] == "fhir"
    assert [s.path for s in fhir.seen] == ["/fhir/Condition"]


def test_operation_outcome_without_a_server_is_a_gap_or_412() -> None:
    resolved = resolve(
        request_for({**complete_prefetch(), "procedures": OUTCOME}), SCREENING, environment(), AT, soon()
    )
    assert resolved.gaps == ("procedures",)
    assert resolved.data["procedures"] == OUTCOME  # the engine reports the failed prefetch as a data issue
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve(
            request_for({**complete_prefetch(), "observations": OUTCOME}),
            SCREENING,
            environment(),
            AT,
            soon(),
        )
    assert caught.value.keys == ("observations",)
    assert caught.value.expressions == ("prefetch.observations",)


def test_absent_keys_are_fetched_with_the_token(fhir: LoopbackServer) -> None:
    resolved = resolve(request_for({}, fhir), SCREENING, environment(dev=True), AT, soon())
    assert resolved.gaps == ()
    assert resolved.data["patient"] == {"resourceType": "Patient", "id": "p1"}
    assert set(resolved.sources.values()) == {"fhir"}
    assert sorted(s.path for s in fhir.seen) == sorted(
        f"/fhir/{p}"
        for p in (
            "Patient/p1",
            "Observation",
            "Condition",
            "Procedure",
            "MedicationAdministration",
            "MedicationRequest",
        )
    )
    for seen in fhir.seen:
        assert seen.headers["Authorization"] == "Bearer tok-1"
        assert seen.headers["Accept"] == "application/fhir+json"
    observation_query = next(s.query for s in fhir.seen if s.path == "/fhir/Observation")
    assert observation_query["date"] == ["ge2026-01-10"]
    assert observation_query["patient"] == ["p1"] and observation_query["_sort"] == ["-date"]


def test_absent_optional_keys_without_a_server_are_gaps() -> None:
    prefetch = {"patient": {"resourceType": "Patient", "id": "p1"}, "observations": searchset([])}
    resolved = resolve(request_for(prefetch), SCREENING, environment(), AT, soon())
    assert resolved.gaps == ("conditions", "procedures", "medicationAdministrations", "medicationRequests")
    assert set(resolved.data) == {"patient", "observations"}


def test_absent_required_keys_without_a_server_are_412() -> None:
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve(request_for({"conditions": None}), SCREENING, environment(), AT, soon())
    assert caught.value.keys == ("patient", "observations")
    assert "no fhirServer" in caught.value.message


def test_a_read_that_is_404_means_no_data(fhir: LoopbackServer) -> None:
    resolved = resolve(request_for({}, fhir, patient="gone"), SCREENING, environment(dev=True), AT, soon())
    assert resolved.data["patient"] is None and resolved.gaps == ()


def test_a_paginated_prefetch_bundle_is_completed(fhir: LoopbackServer) -> None:
    first_page = searchset([{"resourceType": "Observation", "id": "page1"}])
    first_page["link"] = [
        {"relation": "next", "url": f"{fhir.base_url}/fhir/Observation?patient=p1&_offset=1"}
    ]
    prefetch = {**complete_prefetch(), "observations": first_page}
    resolved = resolve(request_for(prefetch, fhir), SCREENING, environment(dev=True), AT, soon())
    ids = [e["resource"]["id"] for e in resolved.data["observations"]["entry"]]
    assert ids == ["page1", "page2"]
    assert resolved.sources["observations"] == "prefetch+fhir"


def test_production_policy_refuses_an_http_server(fhir: LoopbackServer) -> None:
    with pytest.raises(PrefetchUnavailable) as caught:
        resolve(request_for({}, fhir), SCREENING, environment(dev=False), AT, soon())
    assert "not allowed by policy" in caught.value.message
    assert fhir.seen == []


def test_anonymous_fallback_only_in_development(fhir: LoopbackServer) -> None:
    anonymous = request_for({}, fhir, token=None)
    resolve(anonymous, SCREENING, environment(dev=True), AT, soon())
    assert fhir.seen and all("Authorization" not in s.headers for s in fhir.seen)
    fhir.seen.clear()
    env = environment(dev=False)
    env = FetchEnvironment(env.session, dev_fhir_server_policy, False, 1.0, 10, 60)
    with pytest.raises(PrefetchUnavailable, match="no fhirAuthorization"):
        resolve(anonymous, SCREENING, env, AT, soon())
    assert fhir.seen == []


def test_a_template_the_context_cannot_fill_is_a_gap(fhir: LoopbackServer) -> None:
    service = ServiceDefinition(
        "x",
        "patient-view",
        "t",
        "d",
        (
            PrefetchTemplate("patient", "Patient/{{context.patientId}}", required=True),
            PrefetchTemplate("encounter", "Encounter/{{context.encounterId}}"),
        ),
    )
    resolved = resolve(request_for({}, fhir), service, environment(dev=True), AT, soon())
    assert resolved.gaps == ("encounter",)
    assert [s.path for s in fhir.seen] == ["/fhir/Patient/p1"]


def test_a_paginated_prefetch_bundle_without_a_server_is_an_incomplete_gap() -> None:
    first_page = searchset([{"resourceType": "Condition", "id": "c1"}])
    first_page["link"] = [{"relation": "next", "url": "https://ehr.example.org/fhir/Condition?page=2"}]
    resolved = resolve(
        request_for({**complete_prefetch(), "conditions": first_page}), SCREENING, environment(), AT, soon()
    )
    assert resolved.gaps == ("conditions",)
    assert resolved.data["conditions"] == first_page  # what the client sent is still used


def test_a_read_returning_another_resource_type_is_refused() -> None:
    def handler(seen: Seen) -> Reply:
        if seen.path.startswith("/fhir/Patient/"):
            return Reply(body={"resourceType": "Bundle", "type": "searchset"})
        return Reply(body=searchset([]))

    with LoopbackServer(handler) as server:
        with pytest.raises(PrefetchUnavailable, match="patient: read returned another resource type"):
            resolve(request_for({}, server), SCREENING, environment(dev=True), AT, soon())
