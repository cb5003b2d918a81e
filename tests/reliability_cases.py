"""Every fault, bad input and hostile input tried by the tests (issue 8), with the
outcome the test asserts and the points lost. docs/reliability.md is rendered from this
list (``python benchmarks/reliability_table.py``) and tests/test_reliability_doc.py
checks that the file matches and that every named test exists, so the table cannot
drift from the tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    kind: str  # fault, bad input, hostile, secret
    what: str
    outcome: str
    test: str  # tests/FILE.py::test_name
    lost: int = 0  # points lost or corrupted (every test asserts 0)


F, B, H, S = "fault", "bad input", "hostile", "secret"
TF, TB, TH = "tests/test_faults.py", "tests/test_bad_input.py", "tests/test_hostile.py"
TD, TM, TX = "tests/test_influx_baddata.py", "tests/test_model_bundle.py", "tests/test_influx_flux.py"

CASES: list[Case] = [
    # ------------------------------------------------------------------ faults
    Case(F, "influxd SIGKILLed at the first extraction query, restarted 0.3 s later",
         "task retry succeeds; summary and every written score identical to an undisturbed run",
         f"{TF}::test_influx_killed_during_extraction_and_restarted_within_retries_gives_the_same_result"),
    Case(F, "influxd down for longer than the retries (killed at extraction, kept down)",
         "run fails: message names the server URL, the attempts and `cricket influx start`; "
         "no score written for the window; the next run after recovery scores all of it",
         f"{TF}::test_influx_down_longer_than_retries_fails_naming_the_server_writes_nothing_then_next_run_scores"),
    Case(F, "influxd killed during a 4-chunk backfill (third chunk's read)",
         "ledger holds only the 2 finished chunks; rerun skips them and scores the other 2; "
         "no duplicates",
         f"{TF}::test_influx_down_during_a_backfill_marks_only_finished_chunks_and_the_rerun_scores_the_rest"),
    Case(F, "influxd killed during the write-back (third 100-point batch)",
         "run fails saying how many points were written and which range was not; "
         "re-running the window leaves exactly one copy of every point",
         f"{TF}::test_influx_killed_during_write_back_then_rerun_leaves_exactly_one_copy"),
    Case(F, "MLflow SQLite store corrupted before scoring",
         "RegistryUnavailableError naming the store and the fix; nothing written; champion unchanged",
         f"{TF}::test_mlflow_store_corrupted_during_scoring_is_a_clear_failure_and_writes_nothing"),
    Case(F, "MLflow store corrupted between register and promote (retrain)",
         "clear failure naming the store; the old champion stays champion; the new version "
         "is not promoted",
         f"{TF}::test_mlflow_store_corrupted_between_register_and_promote_keeps_the_champion"),
    Case(F, "MLflow store corrupted before the training run is logged",
         "clear failure; no version registered; champion unchanged",
         f"{TF}::test_mlflow_store_corrupted_before_register_registers_nothing"),
    Case(F, "`cricket backfill` process SIGKILLed after its first chunk, then run again",
         "second run skips the finished chunks and scores the rest: 12 chunks in the ledger, "
         "each once; every point written once",
         f"{TF}::test_backfill_process_killed_midway_then_rerun_scores_every_chunk_exactly_once"),
    Case(F, "two hourly runs of the same window at once",
         "both finish; one copy of every point (same time + tags overwrite)",
         f"{TF}::test_two_hourly_runs_at_once_write_nothing_twice"),
    Case(F, "two hourly runs at once, as deployments",
         "hourly-score has concurrency limit 1 with CANCEL_NEW in prefect.yaml, which serve.py serves "
         "(registered on a real API by tests/test_deployments.py)",
         f"{TF}::test_hourly_deployment_keeps_one_run_at_a_time"),
    Case(F, "two runs of hourly-score for the same window, both queued before `cricket serve` "
         "starts and picked up in its first poll",
         "the Prefect server admits one (COMPLETED) and cancels the other at Pending "
         "(\"Deployment concurrency limit reached.\"; it never runs a task); one score per "
         "series per step, one MLflow scoring run; the slot is free afterwards",
         "tests/test_concurrency.py::"
         "test_two_served_hourly_runs_of_one_window_one_completes_the_other_is_cancelled_nothing_written_twice"),
    Case(F, "MLflow SQLite store moved away (scoring looks for the champion)",
         "RegistryUnavailableError: the store does not exist, so there is no champion; run "
         "the retrain or point CRICKET_MLFLOW_TRACKING_URI at the moved store; no empty "
         "store is created in its place",
         "tests/test_registry.py::test_a_missing_store_is_named_and_not_silently_created"),
    Case(F, "backfill run before the range's data arrived (0 points), then with only its "
         "first 10 minutes, then after all of it landed",
         "no chunk recorded as done until it held >= 90% of the expected points (notes say "
         "so); the rerun after the data landed scores every chunk; the next run skips them",
         "tests/test_ledger_models.py::test_backfill_before_late_data_records_no_chunk_and_the_rerun_scores_it"),
    Case(F, "two model names (both version 1) backfill the same series and hours",
         "each model's scores, events and ledger kept apart (tag `model_name`); the second "
         "model skips nothing and overwrites nothing",
         "tests/test_ledger_models.py::test_two_model_names_keep_their_own_scores_events_and_ledgers"),
    Case(F, "a 12 h read at 1 s (43,200 rows per series) on an influxd without a row limit",
         "read whole, raw and GROUP BY time; not taken for max-row-limit truncation (InfluxDB 1.x "
         "marks a complete series longer than 10,000 rows `partial` in a plain answer: queries "
         "now ask for chunked answers and join the pieces)",
         "tests/test_server_limits.py::test_a_long_read_at_one_second_on_a_server_without_a_row_limit_comes_back_whole"),
    Case(F, "influxd with `max-row-limit = 40` and a fleet of 60 series",
         "discovery (paged `SHOW SERIES`) and reads see all 60; retrain and hourly score complete "
         "with every point written",
         "tests/test_server_limits.py::test_a_fleet_larger_than_the_servers_row_limit_is_discovered_read_and_scored"),
    # ------------------------------------------------------------------ bad input
    Case(B, "non-numeric (string) field", "exit 1: 'non-numeric ... select a numeric field'; nothing written",
         f"{TB}::test_non_numeric_field_fails_the_score_naming_the_field_and_writes_nothing"),
    Case(B, "string field, InfluxQL source level", "InfluxError 'non-numeric'",
         f"{TD}::test_string_field_is_a_clear_error"),
    Case(B, "NaN and inf in a series", "treated as gaps (warning for inf); only finite results",
         f"{TB}::test_nan_and_inf_in_a_series_score_as_gaps_with_finite_results"),
    Case(B, "NaN and inf written to InfluxDB", "skipped on write, missing on read",
         f"{TD}::test_nan_and_inf_are_skipped_on_write_and_missing_on_read"),
    Case(B, "duplicate and unordered timestamps", "sorted; duplicates averaged with a warning",
         f"{TB}::test_duplicate_and_unordered_timestamps_are_sorted_and_averaged"),
    Case(B, "clock jump backwards (10 min written twice)",
         "one point per step (last write wins); window scored",
         f"{TB}::test_clock_jump_backwards_leaves_one_point_per_step_and_scores_the_window"),
    Case(B, "gap longer than the scored window", "noted 'no data in this window'; nothing invented",
         f"{TB}::test_gap_longer_than_the_window_is_noted_and_nothing_is_invented"),
    Case(B, "outages inside the scored window (8 and 60 steps)",
         "no score or row for a missing step; the data after each scored from what arrived "
         "(segments over the gap matched on their observed samples)",
         f"{TB}::test_outages_get_no_score_and_the_data_after_them_is_scored_from_what_arrived"),
    Case(B, "gap longer than the training window", "no own library: served by the fleet library",
         f"{TB}::test_gap_longer_than_the_training_window_leaves_the_series_to_the_fleet_library"),
    Case(B, "flat line", "scored, finite scores",
         f"{TB}::test_flat_line_is_scored_without_error"),
    Case(B, "one value repeated, then a spike", "an event at the spike",
         f"{TB}::test_repeated_value_then_spike_raises_an_event_at_the_spike"),
    Case(B, "series shorter than a segment (5 points)", "no crash; no invented points",
         f"{TB}::test_series_shorter_than_a_segment_is_scored_or_skipped_without_crashing"),
    Case(B, "brand-new series with no model", "scored by the fleet library",
         f"{TB}::test_brand_new_series_without_a_model_is_scored_by_the_fleet_library"),
    Case(B, "series that disappeared", "noted in the summary; the other series scored",
         f"{TB}::test_series_that_disappeared_is_noted_and_the_others_are_scored"),
    Case(B, "selector matching nothing (retrain)", "exit 1: 'the selector matched no series ...'",
         f"{TB}::test_selector_matching_nothing_fails_retrain_with_a_clear_message"),
    Case(B, "selector whose tag filter matches no series (score)", "exit 0, 0 points, note 'nothing to score'",
         f"{TB}::test_selector_matching_nothing_scores_nothing_and_says_so"),
    Case(B, "selector naming what does not exist: `--group-by hots`, `--field valeu`, "
         "`--measurement wavefrom`, `--tag hots=a`",
         "exit 1 before scoring: 'does not exist', naming it and listing the tag keys / fields / "
         "measurements that do; nothing written",
         "tests/test_selector_checks.py::test_a_selector_naming_what_does_not_exist_is_refused_listing_what_does"),
    Case(B, "scoring (score, backfill) at `--every 60s` with a model trained at 10 s",
         "exit 1 before scoring, one line naming the version, both steps and the fix; nothing written",
         "tests/test_selector_checks.py::test_scoring_at_another_step_than_the_model_was_trained_at_is_refused"),
    Case(B, "`retrain --holdout 0s`; a retrain where every series is too short for its own model",
         "holdout refused in one line; the fleet-only version (0 per-series models) is registered "
         "but not promoted, and `cricket models promote` refuses it; the champion stays",
         "tests/test_promotion_safety.py::test_zero_holdout_is_refused_and_a_version_without_series_models_is_not_promoted"),
    Case(B, "a retrain of another measurement under the production model name",
         "not promoted: 'covers none of the champion's N series'; the champion stays",
         "tests/test_promotion_safety.py::test_a_version_trained_on_other_series_is_not_promoted"),
    Case(B, "champion bundle edited to NaN thresholds, NaN centroids, or its artifact folder deleted",
         "the next score exits 1 with one line naming the version and the fix (rollback / promote / "
         "retrain), nothing written; `cricket models promote` of it refused the same way",
         "tests/test_promotion_safety.py::test_a_damaged_bundle_is_refused_on_promote_and_on_load"),
    Case(B, "one series whose stored tag value cannot be written back as line protocol "
         "(`bad\\\\host`)",
         "skipped with a note naming it (`skipped_series` in the summary, a warning line on the "
         "CLI); the other series scored and written; exit 0",
         "tests/test_selector_checks.py::test_a_series_that_cannot_be_written_back_is_skipped_and_the_others_are_scored"),
    Case(B, "model of a future format version in the registry", "exit 1 naming the version and 'retrain'; nothing written",
         f"{TB}::test_future_model_format_in_the_registry_is_refused_with_retrain_advice"),
    Case(B, "model file of a wrong or future format version", "ModelFormatError",
         f"{TM}::test_wrong_or_future_format_version"),
    Case(B, "corrupted (truncated) model artifact in the registry", "exit 1 with retrain advice; nothing written",
         f"{TB}::test_corrupted_model_artifact_in_the_registry_is_refused_and_nothing_is_written"),
    Case(B, "corrupted npz", "ModelFormatError", f"{TM}::test_corrupted_npz_is_refused"),
    Case(B, "backfill start after end", "exit 1: 'start ... is not before end ...: swap them'",
         f"{TB}::test_backfill_start_after_end_is_refused_naming_both_times"),
    Case(B, "backfill in the future", "exit 1: 'in the future'", f"{TB}::test_backfill_in_the_future_is_refused"),
    Case(B, "score window in the future", "exit 1: 'in the future ... at or before now'",
         f"{TB}::test_score_window_in_the_future_is_refused"),
    Case(B, "unreadable time", "exit 1 with an example time", f"{TB}::test_unreadable_time_is_refused_with_an_example"),
    Case(B, "unreadable duration", "exit 1 with example durations", f"{TB}::test_unreadable_duration_is_refused_with_examples"),
    Case(B, "tag filter without '='", "exit 1: 'KEY=VALUE'", f"{TB}::test_tag_filter_without_equals_is_refused"),
    Case(B, "odd segment length", "exit 1: 'segment_len must be even'", f"{TB}::test_odd_segment_length_is_refused_before_any_work"),
    Case(B, "holdout not shorter than the training window", "exit 1 before any work",
         f"{TB}::test_holdout_not_shorter_than_the_training_window_is_refused"),
    Case(B, "unknown model version", "exit 1 naming `cricket models list`",
         f"{TB}::test_unknown_model_version_names_the_command_that_lists_versions"),
    Case(B, "Flux source with no token", "exit 1 naming CRICKET_INFLUX_TOKEN",
         f"{TB}::test_flux_source_without_a_token_is_refused_naming_the_setting"),
    Case(B, "unreachable URL", "exit 1 naming the URL, the attempts and how to start a server",
         f"{TB}::test_unreachable_url_fails_naming_the_url_and_how_to_start_a_server"),
    Case(B, "wrong password (influxd with auth on)", "'refused the credentials' naming the settings; password not echoed",
         f"{TB}::test_wrong_password_is_refused_naming_the_settings_to_check"),
    Case(B, "no credentials on a server with auth", "'refused the credentials'",
         f"{TB}::test_missing_credentials_on_a_server_with_auth_are_refused"),
    Case(B, "database that does not exist", "exit 1 naming it and `CREATE DATABASE`",
         f"{TB}::test_database_that_does_not_exist_fails_naming_it_and_the_fix"),
    Case(B, "bucket that does not exist (Flux, recorded responses)", "InfluxError naming the bucket",
         f"{TX}::test_string_field_and_missing_bucket_are_clear_errors"),
    Case(B, "all of the above", "raw series read back exactly as written",
         f"{TB}::test_none_of_the_bad_inputs_changed_the_stored_raw_data"),
    Case(B, "extreme but legal parameters: `retrain --every 1ms --train-window 7d`, "
         "`score --every 1ms --window 1d`, a year of backfill in 1 s chunks, a chunk shorter "
         "than the step",
         "exit 1 before anything is read or allocated, one line with the estimated points or "
         "chunks, the bound (cricket/limits.py) and the fix; nothing written",
         "tests/test_resource_limits.py::test_extreme_steps_windows_and_chunks_are_refused_in_one_line_before_any_work"),
    Case(B, "tag values of 12 kB and 40 kB; state, MLflow store and reports under a folder named "
         "`odd dir ü ☃ #&' %20`",
         "retrain and score run; the 12 kB series read (query sent as a POST body) and written; "
         "the 40 kB one, whose results' series key would pass InfluxDB's 64 kB, skipped with a "
         "note; per-series MLflow metric names kept under 250 characters",
         "tests/test_resource_limits.py::test_long_tag_values_and_odd_paths_are_scored_or_skipped_with_a_note"),
    Case(B, "values of magnitude 1e-300, 1e300 and 1e308 (an anomaly x1.5 inside)",
         "finite scores, the anomaly found, the report rendered (a plot matplotlib cannot draw "
         "says so in the report instead of failing the run)",
         "tests/test_resource_limits.py::test_extreme_magnitudes_score_finite_find_the_anomaly_and_render_a_report"),
    Case(B, "a report folder that cannot be created (score and backfill)",
         "exit 1 before any score is written: 'cannot write reports to ...' naming the folder and "
         "CRICKET_REPORT_DIR; a report write that fails later says the results in InfluxDB are complete",
         "tests/test_resource_limits.py::test_a_report_folder_that_cannot_be_created_fails_before_any_score_is_written"),
    # ------------------------------------------------------------------ hostile
    Case(H, "injection payloads as tag values (InfluxQL, real influxd)", "matched literally",
         f"{TD}::test_hostile_tag_values_match_literally"),
    Case(H, "payloads in measurement, field, tag key and group-by names (InfluxQL)", "matched literally",
         f"{TD}::test_hostile_measurement_field_and_tag_key_names"),
    Case(H, "newlines / line-protocol injection", "refused everywhere",
         f"{TD}::test_newlines_are_refused_everywhere"),
    Case(H, "payloads as database name (InfluxQL)", "created and used literally; other databases untouched",
         f"{TH}::test_hostile_database_name_is_created_and_used_literally"),
    Case(H, "payloads as series tag and model_version in written results", "matched literally",
         f"{TH}::test_hostile_model_version_and_series_tags_in_results_match_literally"),
    Case(H, "payloads as bucket, measurement, field, tag values (Flux query text + params)",
         "only in params, never in the Flux text; non-plain tag keys refused",
         f"{TH}::test_hostile_selector_names_through_the_flux_source_stay_in_params"),
    Case(H, "payloads as tag values (Flux, recorded responses)", "travel as params",
         f"{TX}::test_hostile_values_travel_as_params_never_as_flux_text"),
    Case(H, "payloads (SQL, path traversal, HTML) as the model name", "stored literally or refused; other models and files untouched",
         f"{TH}::test_hostile_model_name_is_stored_literally_or_refused_and_touches_no_other_model"),
    Case(H, "HTML in model name, version and notes of the report", "escaped",
         f"{TH}::test_hostile_model_name_in_the_report_is_escaped"),
    Case(H, "`<img onerror>` series tag in the HTML report (headless Chromium)", "rendered as text, no script, no dialog",
         "tests/test_report_browser.py::test_report_renders_escapes_and_screenshots"),
    Case(H, "payloads in the CLI selector (--tag, --measurement)", "match nothing; raw data untouched",
         f"{TH}::test_hostile_selector_from_the_cli_matches_nothing_and_runs_nothing"),
    Case(H, "pickle bomb where an artifact is expected", "refused without being executed",
         f"{TM}::test_pickle_bomb_in_npz_is_refused_without_running"),
    Case(H, "raw pickle / stray .pkl in a bundle", "refused",
         f"{TM}::test_raw_pickle_and_stray_pkl_are_refused"),
    Case(H, "two series whose tag values hold ',' and '=' (dc=x,host='y,host=z' and "
         "dc='x,host=y',host=z)",
         "two keys, two detectors, each scored with its own; written under two `series` tags "
         "with their own values; no false events",
         "tests/test_series_keys.py::test_colliding_tag_values_are_trained_scored_and_written_apart"),
    Case(H, "any measurement, field and tag values (property test over ',', '=', braces, dots, "
         "quotes, backslashes, unicode)",
         "two keys render to the same text only when equal; the text parses back to the key",
         "tests/test_series_keys.py::test_keys_render_to_the_same_text_only_when_they_are_equal"),
    # ------------------------------------------------------------------ secrets
    Case(S, "token and password through retrain, score, backfill and failing runs",
         "absent from logs, stdout/stderr, Prefect logs/artifacts/runs, MLflow params/tags/files, "
         "reports, state files and error messages",
         "tests/test_secrets.py::test_token_and_password_appear_in_no_output"),
]


def render() -> str:
    """docs/reliability.md."""
    lines = [
        "# Reliability: faults, bad input, hostile input",
        "",
        "Generated from `tests/reliability_cases.py` by `python benchmarks/reliability_table.py`;",
        "`tests/test_reliability_doc.py` fails when this file and the cases differ or a named",
        "test is missing. Every row is a test against the real services (influxd, the Prefect",
        "API, an MLflow SQLite store), except the Flux rows, which check the generated query",
        "and recorded responses because no InfluxDB 2.x server can run here.",
        "",
        "Fault tests use the production retry *counts* with shortened delays. Points lost",
        "counts raw or result points lost, doubled or corrupted; each test asserts it.",
        "",
    ]
    total = sum(c.lost for c in CASES)
    for kind, title in ((F, "Faults"), (B, "Bad input"), (H, "Hostile input"), (S, "Secrets")):
        rows = [c for c in CASES if c.kind == kind]
        lines += [f"## {title} ({len(rows)})", "", "| input or fault | outcome | points lost | test |",
                  "|---|---|---|---|"]
        for c in rows:
            file, _, name = c.test.partition("::")
            lines.append(f"| {c.what} | {c.outcome} | {c.lost} | `{file.removeprefix('tests/')}::{name}` |")
        lines.append("")
    lines.append(f"Points lost in all {len(CASES)} cases: **{total}**.")
    return "\n".join(lines) + "\n"
