"""`nas dashboard`: the Streamlit app on a nas store, read-only. This file only routes.

    streamlit run dashboard/app.py -- --db sqlite:///nas.db     (or $NAS_DB; see serve.py)

Pages read the store through `nas.dashboard.queries`; each is a file under views/. (Not
pages/: beside the entry file, Streamlit takes a folder of that name for a legacy
multipage app, and a first visit to e.g. /pareto would bypass st.navigation.)
"""

import streamlit as st
from nas.dashboard.ui import PAGES

st.set_page_config(page_title="nas dashboard", page_icon=":material/insights:", layout="wide")
st.navigation({
    "Search": [
        st.Page(PAGES["experiments"], title="Experiments", icon=":material/list:", default=True),
        st.Page(PAGES["pareto"], title="Pareto front", icon=":material/scatter_plot:"),
        st.Page(PAGES["architecture"], title="Architecture", icon=":material/account_tree:"),
        st.Page(PAGES["trials"], title="Trials", icon=":material/table_rows:"),
    ],
    "Analysis": [
        st.Page(PAGES["insight"], title="Search insight", icon=":material/lightbulb:"),
        st.Page(PAGES["ablations"], title="Ablations", icon=":material/science:"),
        st.Page(PAGES["compare"], title="Compare experiments", icon=":material/compare_arrows:"),
    ],
}).run()
