import pytest
from synthetic import write_corpus


@pytest.fixture
def corpus_dir(tmp_path):
    """A synthetic LAReQA corpus whose relevance structure is known exactly (see synthetic.py)."""
    return write_corpus(tmp_path / "xquad-r")
