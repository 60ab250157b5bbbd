"""SCALE-Sim cfg and topology CSV parsing: real files parse, bad ones name file, line and field."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscale.errors import MlscaleError
from mlscale.processors.systolic import BUILTIN_CONFIGS, load_config, load_topology
from mlscale.processors.systolic.formats import parse_config, parse_topology

# configs/google.cfg as shipped with SCALE-Sim 3.0.0 (abridged: the sections mlscale reads)
GOOGLE_CFG = """[general]
run_name = GoogleTPU_v1_os

[architecture_presets]
ArrayHeight:    256
ArrayWidth:     256
IfmapSramSzkB:    6144
FilterSramSzkB:   6144
OfmapSramSzkB:    2048
IfmapOffset:    0
Dataflow : os
Bandwidth : 10

[run_presets]
InterfaceBandwidth: USER
"""

CONV_CSV = """Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
Conv1     ,224         ,224        ,11           ,11          ,3       ,96        ,4      ,

Conv2     ,27         ,27        ,5            ,5           ,96      ,256       ,1      ,
"""

GEMM_CSV = "Layer,M,N,K,\nL0,196,192,384,\nL1,196,1176,64,\n"


def test_scalesim_cfg_parses_like_scalesim_reads_it():
    a = parse_config(GOOGLE_CFG, "google.cfg")
    assert (a.rows, a.cols, a.dataflow, a.bandwidth_words_per_cycle) == (256, 256, "os", 10)
    assert (a.ifmap_sram_kb, a.filter_sram_kb, a.ofmap_sram_kb) == (6144, 6144, 2048)
    assert a.name == "GoogleTPU_v1_os"
    calc = parse_config(GOOGLE_CFG.replace("USER", "CALC"), "x.cfg")
    assert calc.bandwidth_words_per_cycle is None


def test_topologies_parse_conv_and_gemm_rows():
    conv = parse_topology(CONV_CSV, "alexnet.csv")
    assert [(l.name, l.M, l.N, l.K) for l in conv] == [("Conv1", 3025, 96, 363), ("Conv2", 529, 256, 2400)]
    gemm = parse_topology(GEMM_CSV, "vit_s.csv")
    assert [(l.M, l.N, l.K) for l in gemm] == [(196, 192, 384), (196, 1176, 64)]  # columns are M, N, K


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOGLE_CFG.replace("ArrayWidth:     256", "ArrayWidth:     0"), "google.cfg:6: field ArrayWidth"),
        (GOOGLE_CFG.replace("Dataflow : os", "Dataflow : xs"), "google.cfg:11: field Dataflow"),
        (GOOGLE_CFG.replace("IfmapSramSzkB:    6144\n", ""), "missing field IfmapSramSzkB"),
        ("no sections here", "google.cfg"),
    ],
)
def test_bad_cfg_names_file_line_and_field(text, expected):
    with pytest.raises(MlscaleError, match=expected):
        parse_config(text, "google.cfg")


@pytest.mark.parametrize(
    "text,expected",
    [
        (CONV_CSV.replace(",96        ,4", ",-96       ,4"), r"net.csv:2: field 'Num Filter'"),
        (CONV_CSV.replace("27         ,27", "27         ,x"), r"net.csv:4: field 'IFMAP Width'"),
        (CONV_CSV.replace(",5            ,5", ",50           ,5"), r"net.csv:4: .*larger than the input"),
        (GEMM_CSV + "L2,1,2,\n", r"net.csv:4: gemm row has 3 fields"),
        ("Layer,M,N,K,\n", "no layer rows"),
        ("", "empty topology"),
    ],
)
def test_bad_topology_names_file_line_and_field(text, expected):
    with pytest.raises(MlscaleError, match=expected):
        parse_topology(text, "net.csv")


def test_files_and_builtins(tmp_path):
    cfg = tmp_path / "g.cfg"
    cfg.write_text(GOOGLE_CFG)
    assert load_config(cfg).rows == 256
    assert load_config("tpu-v1") is BUILTIN_CONFIGS["tpu-v1"] and BUILTIN_CONFIGS["tpu-v1"].dataflow == "ws"
    with pytest.raises(MlscaleError, match="no such config"):
        load_config(tmp_path / "missing.cfg")
    csv = tmp_path / "t.csv"
    csv.write_text(GEMM_CSV)
    assert len(load_topology(csv)) == 2


cell = st.one_of(st.integers(-5, 300).map(str), st.text(max_size=4), st.just(""), st.just(" 7 "))


@settings(max_examples=300, deadline=None)
@given(header=st.sampled_from(["Layer,M,N,K,", "Layer name, IFMAP Height, IFMAP Width, Filter Height, "
                               "Filter Width, Channels, Num Filter, Strides,", "", "x"]),
       rows=st.lists(st.lists(cell, max_size=10), max_size=4))
def test_any_topology_text_parses_or_raises_user_error(header, rows):
    text = header + "\n" + "\n".join(",".join(r) + "," for r in rows)
    try:
        layers = parse_topology(text, "fuzz.csv")
    except MlscaleError as err:
        assert "\n" not in str(err)
        return
    assert all(l.M > 0 and l.N > 0 and l.K > 0 for l in layers)


@settings(max_examples=300, deadline=None)
@given(values=st.fixed_dictionaries({k: st.one_of(st.integers(-3, 600).map(str), st.text(max_size=5))
                                     for k in ("ArrayHeight", "ArrayWidth", "IfmapSramSzkB", "Dataflow", "Bandwidth")}),
       junk=st.text(max_size=30))
def test_any_cfg_text_parses_or_raises_user_error(values, junk):
    text = GOOGLE_CFG
    for key, value in values.items():
        text = "\n".join(f"{key}: {value}" if line.split(":")[0].strip() == key else line
                         for line in text.splitlines())
    for candidate in (text, text + "\n" + junk, junk):
        try:
            a = parse_config(candidate, "fuzz.cfg")
        except MlscaleError as err:
            assert "\n" not in str(err)
            continue
        assert a.rows > 0 and a.cols > 0 and a.dataflow in ("os", "ws", "is")
