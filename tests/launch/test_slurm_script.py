"""Batch scripts and resources, without a cluster: what ``launch slurm`` would submit, and what it refuses."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from launch.slurm import plan_jobs
from launch.slurm_config import SlurmConfig, slurm_config_from
from launch_testing import REPO, TINY_CONFIG, run_cli
from olmo_injection.sweep import expand_sweep, load_sweep


@pytest.fixture
def sweep_file(tmp_path):
    def write(slurm=None, **sweep):
        """The tiny config, with a global batch that splits over up to 64 ranks."""
        body = {"sweep": {"name": "s", "base": [str(TINY_CONFIG)], "model_dir": str(REPO / "configs" / "models"),
                          "overrides": {"global_train_batch_size": 64}, **sweep}}
        if slurm is not None:
            body["slurm"] = slurm
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(body))
        return path
    return write


def jobs_for(path, runs_root, **slurm):
    sweep = load_sweep(path)
    return plan_jobs(sweep.name, expand_sweep(sweep, runs_root), slurm_config_from({**sweep.slurm, **slurm}))


def test_one_array_job_per_model_size_with_per_model_resources(sweep_file, tmp_path):
    path = sweep_file(models=["4M", "20M"], frequencies=[1e-3, 2e-3],
                      slurm={"nodes": 1, "per_model": {"20M": {"nodes": 2, "time": "1-00:00:00"}}})
    jobs = jobs_for(path, tmp_path / "runs")
    assert [j.name for j in jobs] == ["s-4M", "s-20M"]
    assert [[r.name for r in j.runs] for j in jobs] == [
        ["s-4M-f1.000e-03", "s-4M-f2.000e-03"], ["s-20M-f1.000e-03", "s-20M-f2.000e-03"]]
    assert "#SBATCH --nodes=1\n" in jobs[0].script and "#SBATCH --time=48:00:00\n" in jobs[0].script
    assert "#SBATCH --nodes=2\n" in jobs[1].script and "#SBATCH --time=1-00:00:00\n" in jobs[1].script
    assert jobs[1].script_path == tmp_path / "runs" / "s" / "slurm" / "s-20M.sbatch"


def test_gpu_script_runs_torchrun_per_node_with_c10d_on_the_first_node_and_requeues_on_usr1(sweep_file, tmp_path):
    path = sweep_file(frequencies=[1e-3, 2e-3, 4e-3])
    (job,) = jobs_for(path, tmp_path / "runs", nodes=4, gpus_per_node=8, cpus_per_node=96, partition="h200",
                      account="proj", max_parallel=2, signal_seconds=600, env={"NCCL_SOCKET_IFNAME": "ib0"})
    script = job.script
    for line in ["#SBATCH --array=0-2%2", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=96", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=h200",
                 "#SBATCH --account=proj", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@600",
                 "export NCCL_SOCKET_IFNAME=ib0", "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1",
                 "export OMP_NUM_THREADS=12", "export OLMO_SHARED_FS=1", "export PYTHONFAULTHANDLER=1",
                 "export TORCH_DIST_INIT_BARRIER=1"]:
        assert line + "\n" in script, line
    assert '--rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$RDZV_PORT"' in script
    assert "--nproc-per-node=8" in script and "--shutdown-timeout=600" in script
    assert "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in script
    # one log per rank and restart, and a rank prefix on the job's own log
    assert '--log-dir="$RUN_DIR/logs/ranks-$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}" --redirects=3 --tee=3' in script
    assert '-m olmo_injection.train "$RUN_DIR/run.yaml"' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    # Array task i trains run i.
    dirs = [line.split()[0] for line in script.split("RUN_DIRS=(\n")[1].split("\n)")[0].splitlines()]
    assert dirs == [str(r.run_dir) for r in job.runs]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_cpu_mode_asks_for_no_gpus_and_runs_the_requested_processes(sweep_file, tmp_path):
    (job,) = jobs_for(sweep_file(), tmp_path / "runs", cpu=True, nproc_per_node=2, cpus_per_node=2)
    assert "--gpus-per-node" not in job.script and "NCCL" not in job.script
    assert "--nproc-per-node=2" in job.script and "export OMP_NUM_THREADS=1\n" in job.script


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"gpus_per_node": 16}, r"gpus_per_node=16: a node has only node_gpus=8 GPUs"),
        ({"nodes": 0}, r"nodes=0: must be an integer >= 1"),
        ({"time": "two days"}, r"time='two days': use SLURM's format"),
        ({"mem": "lots"}, r"mem='lots'"),
        ({"nproc_per_node": 4}, r"nproc_per_node=4: on GPUs there is one process per GPU"),
        ({"gpu_count": 8}, r"unknown keys \['gpu_count'\]"),
        ({"per_model": {"4M": {"gpus_per_node": 9}}}, r"per_model.4M.gpus_per_node=9"),
    ],
)
def test_resources_that_cannot_fit_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        slurm_config_from(settings).for_model("4M")


def test_global_batch_must_split_over_the_ranks(sweep_file, tmp_path):
    with pytest.raises(ValueError, match=r"global_train_batch_size=64 is not divisible by .* 3 ranks"):
        jobs_for(sweep_file(), tmp_path / "runs", cpu=True, nproc_per_node=3)


def test_flags_override_the_sweep_file(sweep_file, tmp_path, capsys):
    path = sweep_file(slurm={"nodes": 2, "partition": "a", "runs_root": str(tmp_path / "runs")})
    assert run_cli(["launch", "slurm", str(path), "--dry-run", "--partition", "b"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --partition=b\n" in out and "#SBATCH --nodes=2\n" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_bad_input_stops_before_anything_is_written_or_submitted(sweep_file, tmp_path):
    runs_root = tmp_path / "runs"
    with pytest.raises(ValueError, match="gpus_per_node=9"):
        run_cli(["launch", "slurm", str(sweep_file()), "--runs-root", str(runs_root), "--gpus-per-node", "9"])
    with pytest.raises(ValueError, match="unknown model size"):
        run_cli(["launch", "slurm", str(sweep_file(models=["9M"])), "--runs-root", str(runs_root)])
    assert not runs_root.exists()


def test_sweep_list_and_local_dry_run(sweep_file, tmp_path, capsys):
    path = sweep_file(frequencies=[1e-3, 2e-3])
    assert run_cli(["sweep", "list", str(path), "--runs-root", str(tmp_path), "--max_duration=3"]) == 0
    out = capsys.readouterr().out
    assert "s-f1.000e-03" in out and "s-f2.000e-03" in out and "2 runs of sweep 's'" in out
    with pytest.raises(ValueError, match="has 2 runs; pick one with --run"):
        run_cli(["launch", "local", str(path), "--runs-root", str(tmp_path)])
    assert run_cli(["launch", "local", str(path), "--runs-root", str(tmp_path), "--run", "1",
                    "--nproc-per-node", "2", "--dry-run"]) == 0
    command = capsys.readouterr().out.split()
    run_dir = tmp_path / "s" / "s-f2.000e-03"
    assert command[1:9] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                            f"--log-dir={run_dir / 'logs' / 'ranks'}", "--redirects=3", "--tee=3", "-m"]
    assert command[-1] == str(tmp_path / "s" / "s-f2.000e-03" / "run.yaml")


def test_torchrun_accepts_the_signal_forwarding_flags_the_script_uses():
    """Pins torch's torchrun options the preemption path relies on (forward USR1, wait for the checkpoint)."""
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args([
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout=300",
        "--rdzv-backend=c10d", "--rdzv-endpoint=node1:20001", "--nnodes=2", "--nproc-per-node=8",
        "--log-dir=/runs/r/logs/ranks-7-0", "--redirects=3", "--tee=3",
        "-m", "olmo_injection.train", "run.yaml"])
    assert "SIGUSR1" in args.signals_to_handle.split(",") and args.shutdown_timeout == 300
    assert args.log_dir == "/runs/r/logs/ranks-7-0" and args.redirects == "3" and args.tee == "3"
