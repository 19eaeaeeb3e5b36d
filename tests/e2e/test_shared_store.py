"""Two `edgedistill run` processes on one store at once (issue 20's shared store): both finish, the results
they share (the prepared data, the fine-tuned teacher, its outputs) are computed once, and the store is
valid afterwards."""
from conftest import ENV, cli, write_pipeline


def test_two_runs_at_once_share_what_they_can(tmp_path):
    store = tmp_path / "store"
    pipelines = [write_pipeline(tmp_path / f"p{t}", distill={"temperature": float(t)}) for t in (2, 4)]
    runs = [cli("run", p, "--store", store, "--until", "distill", env=ENV) for p in pipelines]
    outputs = [r.communicate(timeout=600)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    for stage, count in (("prepare", 1), ("finetune", 1), ("teach", 1), ("distill", 2)):
        assert len(list((store / "results" / stage).iterdir())) == count, (stage, outputs)
    for stage in ("prepare", "finetune", "teach"):  # each ran in exactly one of the two
        assert sum(f"> {stage:<10} done" in out for out in outputs) == 1, (stage, outputs)
    verify = cli("verify", "--store", store, env=ENV)
    out = verify.communicate(timeout=120)[0]
    assert verify.returncode == 0, out
