"""Recipe logging (issue 10): --log_level reaches our loggers and transformers', nothing is silenced globally,
and only the two warnings every run triggers by design are filtered."""

import logging

from mtl_study.study import setup_logging
from mtl_study.training import ExpectedNoise


def test_log_level_reaches_our_loggers_and_transformers():
    import transformers

    before = transformers.utils.logging.get_verbosity()
    try:
        setup_logging(logging.INFO)
        assert logging.getLogger("mtl_study").getEffectiveLevel() == logging.INFO
        assert transformers.utils.logging.get_verbosity() == logging.INFO
        setup_logging(logging.WARNING)  # the default (--log_level passive): warnings of every library still show
        assert transformers.utils.logging.get_verbosity() == logging.WARNING
        assert logging.getLogger("data_prep").getEffectiveLevel() == logging.WARNING
    finally:
        transformers.utils.logging.set_verbosity(before)


def record(message):
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1, message, None, None)


def test_only_the_expected_warnings_are_filtered():
    noise = ExpectedNoise()
    pooler = ("BertModel LOAD REPORT from: x\nKey                 | Status     |  | \n--------------------+------------+--+-\n"
              "pooler.dense.weight | UNEXPECTED |  | \npooler.dense.bias   | UNEXPECTED |  | \n\nNotes:\n- UNEXPECTED: can be ignored")
    missing = pooler.replace("pooler.dense.bias   | UNEXPECTED", "encoder.layer.0.x   | MISSING   ")
    assert not noise.filter(record(pooler))
    assert noise.filter(record(missing))  # a real loading problem still shows
    pad = ("The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config. The model "
           "config and generation config were aligned accordingly, being updated with the tokenizer's values. "
           "Updated tokens: {'pad_token_id': 0}.")
    assert not noise.filter(record(pad))
    assert noise.filter(record(pad.replace("{'pad_token_id': 0}", "{'eos_token_id': 2}")))
    assert noise.filter(record("anything else"))
