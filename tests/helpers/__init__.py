"""What the tests share and are not tests themselves: fixtures' factories, probes, markers."""
