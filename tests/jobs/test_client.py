"""hbt's side of the Ray job server: address, token, and one-line failures (no server needed)."""

import pytest
from ray.job_submission import JobDetails, JobStatus, JobType

from hbt.cli import main
from hbt.jobs import client


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        # set, then deleted: monkeypatch records only a variable that existed, and the code under
        # test sets some of these (RAY_AUTH_MODE): undone after the test, they cannot leak on.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token


def test_address_precedence(clean_env, monkeypatch):
    assert client.job_server(None) == client.LOCAL_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "http://a:8265")
    assert client.job_server(None) == "http://a:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://b:8265")
    assert client.job_server(None) == "http://b:8265"
    assert client.job_server("http://c:8265") == "http://c:8265"


@pytest.mark.parametrize("env, mode", [
    ({}, None),  # no token anywhere: Ray's default
    ({"RAY_AUTH_TOKEN": "t"}, "token"),
    ({"RAY_AUTH_TOKEN_PATH": "TOKEN_FILE"}, "token"),
    ({"RAY_AUTH_TOKEN": "t", "RAY_AUTH_MODE": "disabled"}, "disabled"),  # an explicit mode is kept
])
def test_a_configured_token_is_sent(clean_env, monkeypatch, tmp_path, env, mode):
    (tmp_path / "token").write_text("t")
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / "token") if value == "TOKEN_FILE" else value)
    client._use_token_if_any()
    assert client.os.environ.get("RAY_AUTH_MODE") == mode


def test_the_default_token_file_counts(clean_env, tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    client._use_token_if_any()
    assert client.os.environ["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize("text, fragment", [
    ("Request failed with status code 401: Unauthorized", "wants Ray's auth token: set RAY_AUTH_TOKEN"),
    ("Authentication failed: bad\n\nmore", "refused the token"),
    ("Request failed with status code 404: Job x does not exist.\ntrace", "404: Job x does not exist."),
])
def test_server_failures_are_one_line(text, fragment):
    message = str(client._server_error(RuntimeError(text), "http://h:8265"))
    assert fragment in message and "\n" not in message


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_one_line_exit_2_and_the_flag_beats_the_env(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:2")  # Ray's SDK would prefer this
    assert main(["jobs", "list", "--address", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "http://127.0.0.1:1" in err and "Traceback" not in err


class FakeServer:
    """A job server's list after one `hbt submit`: the submission, and the Ray drivers of its two
    steps (each `hbt` step joins the cluster with ray.init), as Ray's JobSubmissionClient lists them."""

    # Submission id -> (status, status message, logs) of the jobs `status`, `logs` and `stop` act on.
    jobs = {"hbt-smoke-1a2b3c4d": (JobStatus.RUNNING, "", "step 1\nstep 2\n"),
            "hbt-train-5e6f7a8b": (JobStatus.FAILED, "Job entrypoint command failed with exit code 2\nlast lines",
                                   "hbt: error: data directory not found\n")}

    def __init__(self, address):
        self.jobs = dict(FakeServer.jobs)

    def get_job_status(self, job_id):
        return self.jobs[job_id][0]

    def get_job_info(self, job_id):
        status, message, _ = self.jobs[job_id]
        return JobDetails(type=JobType.SUBMISSION, job_id=None, submission_id=job_id, entrypoint="",
                          status=status, message=message)

    def get_job_logs(self, job_id):
        return self.jobs[job_id][2]

    async def tail_job_logs(self, job_id):
        for line in self.jobs[job_id][2].splitlines(keepends=True):
            yield line

    def stop_job(self, job_id):
        self.jobs[job_id] = (JobStatus.STOPPED, "stopped by the user", self.jobs[job_id][2])
        return True

    def list_jobs(self):
        return [
            JobDetails(type=JobType.DRIVER, job_id="01000000", entrypoint="", status=JobStatus.SUCCEEDED,
                       start_time=2),
            JobDetails(type=JobType.SUBMISSION, job_id="03000000", submission_id="hbt-smoke-1a2b3c4d",
                       entrypoint="hbt data prepare ... && hbt train ...", status=JobStatus.RUNNING,
                       start_time=1, metadata={"hbt_job": "smoke", "workload": "smoke"}),
            JobDetails(type=JobType.DRIVER, job_id="02000000", entrypoint="", status=JobStatus.SUCCEEDED,
                       start_time=3),
        ]


@pytest.fixture
def fake_server(clean_env, monkeypatch):
    monkeypatch.setattr("ray.job_submission.JobSubmissionClient", FakeServer)


def test_jobs_list_shows_the_submitted_jobs(fake_server, capsys):
    assert main(["jobs", "list"]) == 0
    assert capsys.readouterr().out == "hbt-smoke-1a2b3c4d\tRUNNING\tsmoke\n"


def test_jobs_list_all_adds_the_drivers_labelled(fake_server, capsys):
    assert main(["jobs", "list", "--all"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "hbt-smoke-1a2b3c4d\tRUNNING\tsmoke\tsubmission",
        "01000000\tSUCCEEDED\t\tdriver",
        "02000000\tSUCCEEDED\t\tdriver",
    ]


@pytest.mark.parametrize("address, warned", [
    ("http://head.example:8265", True), ("http://203.0.113.7:8265", True), ("203.0.113.7:8265", True),
    ("http://127.0.0.1:8265", False), ("http://localhost:8265", False), ("http://[::1]:8265", False),
    ("https://head.example:8265", False),
])
def test_a_token_for_a_remote_plain_http_server_is_warned_about(fake_server, monkeypatch, capsys, address, warned):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    assert main(["jobs", "list", "--address", address]) == 0
    err = capsys.readouterr().err
    if warned:
        assert err.count("\n") == 1 and err.startswith(f"hbt: warning: Ray's auth token goes to {address} unencrypted")
        assert "ray dashboard" in err and "kubectl port-forward" in err and "https://" in err
    else:
        assert err == ""


def test_no_token_no_warning(fake_server, capsys):
    assert main(["jobs", "list", "--address", "http://head.example:8265"]) == 0
    assert capsys.readouterr().err == ""


def test_jobs_logs_prints_what_the_job_wrote(fake_server, capsys):
    assert main(["jobs", "logs", "hbt-smoke-1a2b3c4d"]) == 0
    assert capsys.readouterr().out == "step 1\nstep 2\n"


def test_jobs_stop_waits_for_the_job_to_end_and_says_how(fake_server, capsys):
    assert main(["jobs", "stop", "hbt-smoke-1a2b3c4d"]) == 0
    assert capsys.readouterr().out == "hbt-smoke-1a2b3c4d\tSTOPPED\n"


def test_following_a_failed_job_is_exit_1_with_its_first_line(fake_server, capsys):
    """The job ran and failed: not the user's input (exit 1, not 2), one line, after its logs."""
    assert main(["jobs", "logs", "hbt-train-5e6f7a8b", "--follow"]) == 1
    said = capsys.readouterr()
    assert said.out == "hbt: error: data directory not found\n"
    assert said.err == "hbt: job hbt-train-5e6f7a8b FAILED: Job entrypoint command failed with exit code 2\n"
