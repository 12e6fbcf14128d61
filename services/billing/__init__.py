"""billing: channel activations and invoice closures in, charges and invoices out, exactly once."""
