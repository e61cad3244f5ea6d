"""``examples/benchmarks/transfer.py``: its command line and training/adapter recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "examples" / "benchmarks"


@pytest.fixture(scope="module")
def transfer():
    from examples.benchmarks import transfer

    return transfer


def test_command_line_reads_quick_and_recipes(transfer):
    args = transfer.parser().parse_args(
        ["--model", "a=random", "--quick", "--recipe", "wide=petl_ratio=0.375,lr=5e-4", "--recipe", "base=",
         "--recipe", "f=loss=focal"]
    )  # fmt: skip
    assert args.quick
    assert args.recipe == [
        ("wide", {"petl_ratio": 0.375, "lr": 5e-4}),
        ("base", {}),
        ("f", {"loss": "focal"}),
    ]
    assert transfer.recipe_label({"recipe": "f", "changes": {"loss": "focal", "lr": 5e-4}}) == (
        "f (loss=focal, lr=0.0005)"
    )


def test_recipe_changes_only_what_it_names(transfer):
    budget = transfer.BUDGETS["easy-vqa"]
    changes = {"petl_ratio": 0.375, "attention_rank": 16, "ffn_rank": 32, "lr": 5e-4}
    train, adapters = transfer.apply_recipe(budget, changes)
    assert train.lr == 5e-4 and train.epochs == budget.epochs and train.head_lr_mult == budget.head_lr_mult
    assert adapters.petl_ratio == 0.375 and adapters.attention_rank == 16 and adapters.ffn_rank == 32
    assert adapters.skip_ratio == 3 / 8  # the METER family's default, not AdapterConfig's
    assert transfer.apply_recipe(budget, {}) == (budget, None)


def test_unknown_recipe_key_is_refused_with_the_allowed_keys(transfer, capsys):
    with pytest.raises(SystemExit):
        transfer.parser().parse_args(["--model", "a=random", "--recipe", "x=learning_rate=1"])
    assert "petl_ratio" in capsys.readouterr().err


def test_recipe_values_take_their_config_fields_types(transfer, capsys):
    args = transfer.parser().parse_args(["--model", "a=random", "--recipe", "r=ffn_rank=32,seed=1,lr=1e-4"])
    changes = args.recipe[0][1]
    assert changes == {"ffn_rank": 32, "seed": 1, "lr": 1e-4} and type(changes["ffn_rank"]) is int
    with pytest.raises(SystemExit):
        transfer.parser().parse_args(["--model", "a=random", "--recipe", "x=attention_rank=3.5"])
    assert "attention_rank='3.5': expected an integer" in capsys.readouterr().err


def test_recorded_commands_name_no_machine_folders(transfer):
    inside = str(transfer.REPO / "examples" / "benchmarks" / "results" / "transfer")
    assert transfer.portable(inside) == "examples/benchmarks/results/transfer"
    assert transfer.portable("/tmp/run7/out") == "<scratch>/run7/out"
    assert transfer.portable("--quick") == "--quick" and transfer.portable("a=random") == "a=random"
    assert transfer.portable("new=/tmp/ck/textinit") == "new=<scratch>/ck/textinit"


def test_unknown_loss_in_a_recipe_is_refused(transfer, capsys):
    with pytest.raises(SystemExit):
        transfer.parser().parse_args(["--model", "a=random", "--recipe", "x=loss=hinge"])
    assert "loss must be one of" in capsys.readouterr().err


def test_unfreeze_recipe_trains_only_the_named_parts_of_the_fusion_layers(transfer, tmp_path, capsys):
    from edge_vl.training.architectures import family_for
    from edge_vl.training.architectures.quiet import quiet_transformers
    from tests.conftest import VOCAB

    args = transfer.parser().parse_args(["--model", "a=random", "--recipe", "p=unfreeze=attention+ffn"])
    assert args.recipe == [("p", {"unfreeze": "attention+ffn"})]
    assert transfer.apply_recipe(transfer.BUDGETS["digits"], {"unfreeze": "ffn"})[1] is None
    with pytest.raises(SystemExit):
        transfer.parser().parse_args(["--model", "a=random", "--recipe", "x=unfreeze=attention+norms"])
    assert "attention or ffn" in capsys.readouterr().err

    family = family_for("edge_vl_mini")
    with quiet_transformers():
        family.random_checkpoint(tmp_path / "m", vocab=VOCAB, labels=["a", "b"], preset="tiny")
        model = family.load(tmp_path / "m", ["a", "b"])
    family.insert_adapters(model)
    family.freeze(model)
    from examples.benchmarks.variants import unfreeze_fusion as unfreeze

    fusion = len(family.layer_lists(model)[-1])
    attention = unfreeze(family, model, ["attention"])
    assert len(attention) == fusion * 6  # query, key, value: weight and bias
    assert all(".layer.attention.self." in f".{n}" for n in attention)
    ffn = unfreeze(family, model, ["ffn"])
    assert sorted({n.split(".", 1)[1] for n in ffn}) == [
        "layer.intermediate.dense.bias", "layer.intermediate.dense.weight",
        "layer.output.dense.bias", "layer.output.dense.weight",
    ]  # fmt: skip
    text_layers = family.layer_lists(model)[0]
    assert not any(p.requires_grad for layer in text_layers for n, p in layer.named_parameters()
                   if not n.startswith("edgevl_") and ".edgevl_" not in n)  # fmt: skip


def test_benchmark_data_goes_only_into_a_folder_of_its_own(tmp_path):
    from examples.benchmarks.tasks import write_task

    users = tmp_path / "users"
    users.mkdir()
    (users / "train.jsonl").write_text("theirs\n")
    with pytest.raises(SystemExit, match="no edge-vl benchmark wrote"):
        write_task("easy-vqa", users, train_size=4, eval_size=4)
    assert (users / "train.jsonl").read_text() == "theirs\n"
    ours = tmp_path / "work" / "data"
    train, _ = write_task("easy-vqa", ours, train_size=4, eval_size=4)
    assert len(train.read_text().splitlines()) == 4
    train2, _ = write_task("easy-vqa", ours, train_size=4, eval_size=4)  # a rerun reuses its own folder
    assert train2 == train
