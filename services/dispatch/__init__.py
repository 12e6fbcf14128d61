"""dispatch: outbound message commands in, one provider send and one terminal result per command out."""
