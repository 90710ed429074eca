import sys
from pathlib import Path

# Tests import the fixture loader (tests/r_reference.py) as a plain module.
sys.path.insert(0, str(Path(__file__).parent))
